"""Preprocessing ("process data"): photos -> aligned 224x224 crops with landmarks and masks.

* :mod:`~fitting.preprocess.preprocessor`: :class:`Preprocessor` (one photo -> faces);
* :mod:`~fitting.preprocess.detection`, :mod:`~fitting.preprocess.landmarks`,
  :mod:`~fitting.preprocess.alignment`, :mod:`~fitting.preprocess.masks`: its steps;
* :mod:`~fitting.preprocess.folder`: :func:`preprocess_folder` (a folder, resumable);
* :mod:`~fitting.preprocess.command`: ``python -m fitting.preprocess``.

The output of one face is a :class:`~fitting.structures.ProcessedFace`; its
settings are :class:`~fitting.config.PreprocessConfig`. Names are re-exported
lazily (:mod:`utils.lazy`), so the command's ``--help`` does not load dlib or torch.
"""

from utils.lazy import lazy_exports

_EXPORTS = {
    "PreprocessConfig": "..config",
    **dict.fromkeys(["PreprocessError", "Preprocessor", "preprocess_image"], ".preprocessor"),
    **dict.fromkeys(["FolderResult", "preprocess_folder", "output_names", "visualise"], ".folder"),
    "main": ".command",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
