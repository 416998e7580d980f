"""The UV Albedo Parametric Model (UVAPM): per-channel PCA of UV albedo maps.

* :mod:`~models.uv_albedo_model.model`: :class:`UVAlbedoModel` (decode,
  encode, prior, sampling), its file formats (our ``.npz``, the paper's ``.pkl``);
* :mod:`~models.uv_albedo_model.build`: the streamed, confidence-weighted
  PCA that builds one from a folder of UV maps;
* :mod:`~models.uv_albedo_model.command`: ``python -m models.uv_albedo_model build``.

Names are re-exported lazily (:mod:`utils.lazy`), so the command's ``--help`` does not import torch.
"""

from utils.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["UVMapFolder", "build_uv_albedo_model", "coefficient_covariance", "streaming_channel_pca"],
                    ".build"),
    **dict.fromkeys(["FORMAT_VERSION", "UVAlbedoModel", "UVAlbedoModelData", "UVLayoutError", "decode_albedo",
                     "load_uv_albedo_model", "save_uv_albedo_model"], ".model"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
