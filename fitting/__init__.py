"""The reconstruction: photos -> shape, lighting and UV albedo, one module per stage.

==========================  =====================================================================
module                      job
==========================  =====================================================================
:mod:`fitting.config`       every setting, as dataclasses (``configs/fitting.yaml`` mirrors them)
:mod:`fitting.structures`   the data between stages: ``ProcessedFace``, ``FaceBatch``,
                            ``FitState``, ``FaceResult`` and the ``Stage`` protocol
:mod:`fitting.preprocess`   photos -> aligned 224x224 crops, 68 landmarks, skin and parse masks
:mod:`fitting.shape`        stage 1: landmark fit (:mod:`fitting.landmark_fit`), photometric refinement
:mod:`fitting.unwrap`       the photo's de-lit texture in the UV layout
:mod:`fitting.albedo`       stage 2: coarse albedo from the UV albedo model
:mod:`fitting.detail`       stage 3: detail from the detail generator
:mod:`fitting.evaluation`   re-render metrics of every stage
:mod:`fitting.groups`       several photos of one person: what the stages share per person
:mod:`fitting.pipeline`     ``Pipeline``: the models, the list of stages, a batch through them
:mod:`fitting.runner`       a folder: preprocessing, batches, resume, torchrun, outputs, gallery
:mod:`fitting.outputs`      the files of one face or person (``fitting.gallery``: ``index.html``)
:mod:`fitting.run`          the command (``run_rgb_fitting.sh``)
:mod:`fitting.views`        renders of a reconstruction (``render_3d_face.py``)
==========================  =====================================================================

Shared by the stages: :mod:`fitting.losses`, :mod:`fitting.optim` (the one
optimisation loop), :mod:`fitting.params` (``FaceParams``),
:mod:`fitting.metrics`, :mod:`fitting.networks` (the optional official
networks) and :mod:`fitting.progress`. A new stage is a class with a
``name`` and ``__call__(batch, state) -> state``, added in
:meth:`fitting.pipeline.Pipeline.build_stages`.
"""
