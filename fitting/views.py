"""Rendering a reconstruction from several viewpoints: what ``render_3d_face.py`` runs.

Without an albedo map, the mean albedo of the UV albedo model is used
(default ``checkpoints/default/uvapm_<face_model>.npz``). The shape is, by
priority, a mesh (any OBJ with texture coordinates in the face model's UV
layout), a ``coeffs.pt`` of a fit (identity and expression), or the face
model's mean shape. The map is completed into a texture of the whole head
(:class:`models.head_texture.HeadTexture`); the eyeballs, teeth and sockets
of a face model with display parts take their texture from a parts map
(``uv_eyes_mouth.png`` of a fit: by default the one beside the albedo map,
else the default eye colours, :mod:`models.part_texture`). Light ``coeffs`` uses the SH
lighting fitted to the photo. Writes ``view_<yaw>.png`` per view (RGBA), ``contact_sheet.png`` and,
with a turntable, ``turntable.gif`` (or ``.mp4``, which needs the
``imageio-ffmpeg`` package). The albedo map must be square and, when it
carries a ``uv_layout_id`` (maps written by this toolkit do), match the face
model's UV layout. Every file is written atomically, under a lock on the
output folder (:mod:`utils.locking`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from tqdm import tqdm

from assets import load_installed_face_model
from models.config import LIGHT_PRESETS, SHADING_MODES
from models.face_model import FaceModel
from models.lighting import light_preset
from models.part_texture import display_atlas
from models.uv_albedo_model import UVAlbedoModel
from models.view_rendering import ViewMesh, contact_sheet, mesh_from_face_model, mesh_from_obj, render_views
from utils.atomic import atomic_path
from utils.errors import FileFormatError, MissingAssetError, ToolkitError
from utils.image_io import read_image, read_png_text, write_image
from utils.locking import FolderLock
from utils.runtime import resolve_device
from utils.safe_load import load_torch

from .config import RenderConfig
from .pipeline import default_model_path

__all__ = ["render"]

logger = logging.getLogger("uvapm.render")


def _load_albedo(path: Path, face_model: FaceModel) -> torch.Tensor:
    image = read_image(path)
    height, width = image.shape[:2]
    if height != width:
        raise FileFormatError(path, f"UV albedo maps are square; this image is {width}x{height}")
    if width < 16:
        raise FileFormatError(path, f"UV map of {width}x{height} pixels is too small")
    layout = read_png_text(path).get("uv_layout_id")
    if layout is not None and layout != face_model.uv_layout_id:
        raise FileFormatError(
            path, f"UV map made for UV layout {layout}, but face model {face_model.name!r} has layout "
            f"{face_model.uv_layout_id} (use --face_model of the reconstruction)"
        )
    if layout is None:
        logger.warning("%s carries no uv_layout_id; assuming the %s UV layout", path, face_model.name)
    return torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255.0


def _mean_albedo(path: Path | None, face_model: FaceModel) -> torch.Tensor:
    """(3, R, R) mean albedo of a UV albedo model (default: the project's model for the face model)."""
    path = path or default_model_path("uvapm", face_model.name)
    if not path.is_file():
        raise MissingAssetError(f"{path}: no UV albedo model to take the mean albedo from; pass --albedo_map "
                                "(e.g. uv_albedo.png of a reconstruction) or --uvapm FILE")
    model = UVAlbedoModel.from_file(path, uv_layout_id=face_model.uv_layout_id)
    model.check_layout(face_model)
    logger.info("no --albedo_map: rendering the mean albedo of %s", path)
    with torch.no_grad():
        return model(torch.zeros(1, model.num_coeffs))[0].clamp(0, 1)


def _load_coeffs(path: Path, face_model: FaceModel) -> dict:
    coeffs = load_torch(path)
    if not isinstance(coeffs, dict) or "identity" not in coeffs:
        raise FileFormatError(path, "not a coeffs.pt of a fit (no 'identity')")
    name = coeffs.get("face_model", face_model.name)
    if name != face_model.name:
        raise FileFormatError(path, f"coefficients of face model {name!r}, but --face_model is {face_model.name!r}")
    for key, size in (("identity", face_model.num_identity), ("expression", face_model.num_expression)):
        value = coeffs.get(key)
        if value is not None and (not isinstance(value, torch.Tensor) or value.ndim != 2 or value.shape[1] > size):
            raise FileFormatError(path, f"{key!r} must be (1, K<={size}), got {getattr(value, 'shape', value)}")
    gaze = coeffs.get("gaze")
    if gaze is not None and (not isinstance(gaze, torch.Tensor) or tuple(gaze.shape) != (1, 2, 2)
                             or not torch.isfinite(gaze).all()):
        raise FileFormatError(path, f"'gaze' must be (1, 2, 2) finite angles, got {getattr(gaze, 'shape', gaze)}")
    return coeffs


def _load_mesh(path: Path) -> ViewMesh:
    """An OBJ as a :class:`ViewMesh`, checked for what rendering needs."""
    mesh = mesh_from_obj(path)
    if not len(mesh.faces):
        raise FileFormatError(path, "the mesh has no faces")
    if not (torch.isfinite(mesh.vertices).all() and torch.isfinite(mesh.uvs).all()):
        raise FileFormatError(path, "vertex or texture coordinates that are not finite numbers")
    return mesh


def _parts_map(path: Path | None, albedo_path: Path | None, face_model: FaceModel) -> torch.Tensor | None:
    """(3, r, r) the display parts' texture: ``path``, else ``uv_eyes_mouth.png`` beside the albedo map, else
    None (the default colours)."""
    if not face_model.has_parts:
        return None
    if path is None and albedo_path is not None and (albedo_path.parent / "uv_eyes_mouth.png").is_file():
        path = albedo_path.parent / "uv_eyes_mouth.png"
    if path is None:
        return None
    logger.info("eyeballs, teeth and sockets textured with %s", path)
    return _load_albedo(path, face_model)


def render(config: RenderConfig, albedo_path: Path | None, output: Path, mesh_path: Path | None,
           coeffs_path: Path | None, uvapm_path: Path | None = None, progress: bool = False,
           parts_path: Path | None = None) -> None:
    """Render the views (and the turntable) of a reconstruction into ``output`` (see the module docstring)."""
    if config.shading not in SHADING_MODES:
        raise ToolkitError(f"--shading {config.shading!r}: choose one of {', '.join(SHADING_MODES)}")
    if config.light not in (*LIGHT_PRESETS, "coeffs"):
        raise ToolkitError(f"--light {config.light!r}: choose one of {', '.join([*LIGHT_PRESETS, 'coeffs'])}")
    if config.resolution < 32 or config.resolution > 4096:
        raise ToolkitError(f"--resolution {config.resolution}: expected 32..4096")
    device = resolve_device(config.device)
    face_model = FaceModel(load_installed_face_model(config.face_model))
    albedo = (_load_albedo(albedo_path, face_model) if albedo_path else _mean_albedo(uvapm_path, face_model)).to(device)
    parts = _parts_map(parts_path, albedo_path, face_model)
    coeffs = _load_coeffs(coeffs_path, face_model) if coeffs_path else None
    if mesh_path:
        mesh = _load_mesh(mesh_path)
    elif coeffs is not None:
        mesh = mesh_from_face_model(face_model, coeffs["identity"].float(), coeffs.get("expression"),
                                    coeffs.get("gaze"))
    else:
        mesh = mesh_from_face_model(face_model)
    mesh.vertices, mesh.faces, mesh.faces_uv, mesh.uvs = (t.to(device) for t in
                                                          (mesh.vertices, mesh.faces, mesh.faces_uv, mesh.uvs))
    if config.light == "coeffs":
        if coeffs is None or "gamma" not in coeffs:
            raise ToolkitError("--light coeffs needs --coeffs with fitted lighting ('gamma')")
        sh = coeffs["gamma"].float().reshape(1, 27).to(device)
    else:
        sh = light_preset(config.light).to(device)
    with torch.no_grad():
        texture = display_atlas(face_model, albedo[None], parts_tile=None if parts is None else parts[None])[0]
    with FolderLock(output, "render_3d_face.py"):
        images = render_views(mesh, texture, list(config.views), sh, config.shading, config.resolution, config.pitch)
        for yaw, image in zip(config.views, images):
            write_image(output / f"view_{int(round(yaw)):+04d}.png", image.permute(1, 2, 0).cpu().numpy())
        write_image(output / "contact_sheet.png", contact_sheet(images).permute(1, 2, 0).cpu().numpy())
        logger.info("wrote %d views and contact_sheet.png to %s", len(images), output)
        if config.turntable:
            _turntable(config, mesh, texture, sh, output, progress)


def _turntable(config: RenderConfig, mesh, texture, sh, output: Path, progress: bool) -> None:
    if config.turntable not in ("gif", "mp4"):
        raise ToolkitError(f"--turntable {config.turntable!r}: choose gif or mp4")
    frames_count = max(2, config.turntable_frames)
    yaws = [-180 + 360 * k / frames_count for k in range(frames_count)]
    frames = [render_views(mesh, texture, [yaw], sh, config.shading, config.resolution, config.pitch)[0]
              for yaw in tqdm(yaws, desc="turntable", unit="frame", disable=not progress, leave=False)]
    # Composite on white: GIF has no partial transparency and MP4 none at all.
    rgb = [((f[:3] * f[3:] + (1 - f[3:])).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
           for f in frames]
    target = output / f"turntable.{config.turntable}"
    with atomic_path(target) as tmp:
        try:
            if config.turntable == "gif":
                iio.imwrite(tmp, rgb, extension=".gif", duration=80, loop=0)
            else:
                iio.imwrite(tmp, rgb, extension=".mp4", fps=12)
        except (ImportError, ValueError, OSError) as err:
            raise ToolkitError(f"{target}: cannot write {config.turntable} ({err}); for mp4 install "
                               "imageio-ffmpeg, or use --turntable gif") from None
    logger.info("wrote %s (%d frames)", target, frames_count)
