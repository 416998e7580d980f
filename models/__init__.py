"""Models: face model, camera, renderer, UV albedo model and detail generator.

Conventions, stated once for the whole toolkit:

* **Model space**: x to the subject's left as seen by the camera (image
  right), y up, z toward the camera; units are the face model's own
  (``FaceModel.units``; ICT-FaceKit: centimetres).
* **Camera**: a pinhole on the +z axis at ``camera_distance`` looking toward
  -z, focal 1015 px and principal point (112, 112) for a 224x224 image (the
  reference's camera); other image sizes scale both. The distance is 1 m in
  model units (10 for the reference's decimetre models, 100 for ICT).
* **View space** (pytorch3d): +X left, +Y up, +Z into the scene.
* **Pixels**: origin at the top-left corner of the image, x right, y down;
  the centre of pixel (i, j) is at (j + 0.5, i + 0.5). Landmarks are
  (B, 68, 2) in these coordinates. (The reference stores landmarks with y
  up; loaders of its files convert.)
* **Rotations**: (B, 3, 3) matrices on column vectors; the Euler form is
  (x, y, z) radians with R = Rz Ry Rx (:func:`models.face_ops.euler_angles_to_matrix`).
* **UV**: coordinates in [0, 1] with v up (OBJ); a UV map is an image
  (B, 3, R, R) whose row 0 is v = 1. Sampling uses ``align_corners=False``.
* **Images**: (B, 3, H, W) float32 RGB in [0, 1]; masks (B, 1, H, W).

Configuration dataclasses of the model side (renderer, detail generator
and its training, UV albedo model build) live in :mod:`models.config`, which
imports no torch, so commands can print ``--help`` without loading it.
"""

from utils.lazy import lazy_exports

# Lazy, so that ``import models.config`` does not pay for importing torch.
__all__ = ["FaceModel", "FaceModelOutput"]
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, ".face_model"))
