"""The reconstruction pipeline, one module per stage.

* :mod:`fitting.preprocess`: photos -> aligned 224x224 crops, 68 landmarks, skin and parse masks
  (helpers: :mod:`fitting.detection`, :mod:`fitting.landmarks`, :mod:`fitting.alignment`, :mod:`fitting.masks`);
* ``fitting.shape``: face model shape, expression, pose and lighting fit;
* ``fitting.unwrap``: photo texture unwrapped into the UV layout;
* ``fitting.albedo``: coarse UV albedo from the UVAPM;
* ``fitting.detail``: detail generator refinement of the albedo;
* ``fitting.run``: all stages in order.
"""
