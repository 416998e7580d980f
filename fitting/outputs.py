"""Per-face output files of ``run_rgb_fitting.sh`` (all written atomically).

In ``<output_dir>/<name>/``:

======================  ===========================================================
file                    content
======================  ===========================================================
``uv_albedo.png``       final UV albedo (stage 3 at the detail generator's
                        resolution, 512; stage 2 when stage 3 did not run; the
                        unwrapped photo texture with ``--stages 1``), padded past
                        the edges of its UV islands, the skin's grain added where it is
                        flatter than skin
``uv_albedo_head.png``  the rest of the head (scalp, back of head and neck: the
                        ICT UV tile [1, 2]), continued from the face
                        (:class:`models.head_texture.HeadTexture`); not written for
                        face models without that tile
``uv_eyes_mouth.png``   the display parts' texture (:mod:`models.part_texture`): the
                        eyeballs (a standard sclera and the photo's iris measured against
                        it, painted with a pupil), teeth, gums and tongue, mouth and eye
                        sockets;
                        for face models with parts (ICT)
``uv_albedo_1024.png``  with ``outputs.uv_1024``: the final albedo at 1024 texels,
                        ``uv_albedo.png`` enlarged plus the photo's detail above 512
                        texels where it shows the face (:mod:`fitting.high_resolution`)
``uv_albedo_coarse.png``  stage-2 UVAPM albedo at the UVAPM resolution
``uv_unwrapped.png``    the photo's de-lit texture, completed by mirroring and inpainting
``uv_confidence.png``   per-texel trust in the unwrapped texture (white = seen head-on)
``mesh.obj``/``.mtl``   expressive shape (identity + expression, unposed, model units);
                        the face region textured with ``uv_albedo.png``, head and neck
                        (material ``head``) with ``uv_albedo_head.png``, eyeballs,
                        teeth and sockets (``eyes_mouth``) with ``uv_eyes_mouth.png``, the
                        eyeballs turned to the photo's gaze (:mod:`fitting.gaze`)
``mesh_neutral.obj``    the same without expression, the eyes straight ahead (shares ``mesh.mtl``)
``mesh.glb``            ``mesh.obj`` as binary glTF (trimesh): PBR materials (base colour =
                        the albedo maps, metallic 0, roughness 0.7), each part's UVs in
                        its own texture
``coeffs.pt``           the parameters (tensors only, ``weights_only=True``; ``gaze``:
                        the eyeballs' turns, :mod:`fitting.gaze`) and the
                        fitted 68 points in photo pixels, two kinds:
                        ``landmarks_68_contour_px`` (jaw on the silhouette, dlib's
                        convention) and ``landmarks_68_fixed_px`` (the model's fixed
                        landmark vertices, hidden ones included, AFLW2000-3D's)
``coeffs.json``         the same as readable JSON
``render.png``          the final render composited on the photo
``summary.png``         input | landmarks (blue detected, red fitted) | skin mask |
                        stage 1 | stage 2 | stage 3 | UV albedo
``loss.png``            loss terms per step, one chart per stage
``log.txt``             this face's log lines
``metrics.json``        re-render PSNR/SSIM/high-frequency PSNR in the skin mask per
                        stage, landmark residual (against the detections), skin
                        tone (CIELAB, ITA) of the photo and of the albedo, seconds
                        per stage, networks used;
                        written last, so its presence means the face is complete
======================  ===========================================================

A joint fit of several photos of one person (``group_by``) writes the same
files into ``<output_dir>/<person>/`` (the albedo maps and neutral mesh shared
by the photos; ``mesh.obj``, ``coeffs``, ``render.png`` and ``summary.png`` of
its first photo; ``metrics.json`` with the list of ``photos``, the fused
texture's ``unwrap_coverage`` and the first photo's re-render numbers) and, for each
photo, ``photos/<photo>/``: ``coeffs.pt``/``.json`` (its pose, expression and
light with the shared identity and albedo), ``render.png``, ``summary.png``,
``loss.png``, ``log.txt`` and ``metrics.json``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.face_model import FaceModel
from models.head_texture import head_texture_for
from models.part_texture import display_atlas, display_mesh
from utils.atomic import atomic_path, save_torch, write_json, write_text
from utils.image_io import write_image
from utils.mesh_io import write_mtl, write_obj
from utils.plots import line_chart

from .config import OutputConfig
from .eye_probe import eye_colours
from .preprocess.alignment import opencv_affine
from .structures import FaceResult

__all__ = ["FINAL_OUTPUT", "write_face_outputs", "write_photo_outputs", "write_person_outputs", "write_mesh"]

#: Written last; a face whose folder has it is complete.
FINAL_OUTPUT = "metrics.json"


def _image(tensor: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, C) float for write_image."""
    return tensor.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def write_mesh(path: Path, vertices: np.ndarray, face_model: FaceModel, mtl_file: str) -> None:
    """OBJ + MTL of the display mesh, vertices (V + Vp, 3) of :meth:`FaceModel.display_shape`: the face region
    textured with ``uv_albedo.png`` (material ``face``), the rest of the head with ``uv_albedo_head.png``
    (``head``: UVs in the next tile, which a repeating texture maps onto the image) and the display parts with
    ``uv_eyes_mouth.png`` (``eyes_mouth``, the tile after)."""
    face_tris = face_model.faces.cpu().numpy()
    all_tris, all_uv, uvs = (t.cpu().numpy() for t in display_mesh(face_model, torch.as_tensor(vertices)))
    H = len(face_model.head_faces)
    head_tris, head_uv = all_tris[:H], all_uv[:H]
    V = len(vertices)

    def keys(tris):  # order-independent triangle ids
        t = np.sort(tris, 1).astype(np.int64)
        return (t[:, 0] * V + t[:, 1]) * V + t[:, 2]

    rest = ~np.isin(keys(head_tris), keys(face_tris))
    groups = [("head", head_tris[rest], head_uv[rest])] if rest.any() else []
    if len(all_tris) > H:
        groups.append(("eyes_mouth", all_tris[H:], all_uv[H:]))
    write_obj(path, vertices, face_tris, uvs, face_model.faces_uv.cpu().numpy(), mtl_file=mtl_file,
              material="face", extra_groups=tuple(groups))
    textures = {"face": "uv_albedo.png", "head": "uv_albedo_head.png", "eyes_mouth": "uv_eyes_mouth.png"}
    materials = [(name, textures[name], (1.0, 1.0, 1.0)) for name in ["face", *(g[0] for g in groups)]]
    write_mtl(path.parent / mtl_file, materials)


def _glb(obj_path: Path, glb_path: Path) -> None:
    """``mesh.obj`` as binary glTF: one PBR material per texture (base colour = albedo, not metallic, rough
    skin), every geometry's UVs in its own texture's [0, 1] tile (a viewer need not repeat textures)."""
    import trimesh
    from trimesh.visual.material import PBRMaterial

    scene = trimesh.load(obj_path, force="scene", process=False)
    for geometry in scene.geometry.values():
        visual = geometry.visual
        uv = np.asarray(visual.uv, np.float64).copy()
        uv[:, 0] -= np.floor(uv[:, 0].min() + 1e-6)
        image = getattr(visual.material, "image", None)
        material = PBRMaterial(name=getattr(visual.material, "name", None), baseColorTexture=image,
                               baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0, roughnessFactor=0.7)
        geometry.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    with atomic_path(glb_path) as tmp:
        scene.export(tmp, file_type="glb")


def _loss_chart(histories: dict) -> np.ndarray:
    charts = []
    for stage, steps in histories.items():
        if not steps:
            continue
        names = [n for n in steps[0] if n != "total"] + ["total"]
        series = {n: (list(range(len(steps))), [s[n] for s in steps]) for n in names}
        charts.append(line_chart(series, title=f"{stage} loss terms (log scale)", xlabel="step", height=300))
    if not charts:
        return np.full((60, 720, 3), 255, np.uint8)
    return np.concatenate(charts, 0)


def _summary(result: FaceResult, uv: torch.Tensor) -> np.ndarray:
    face = result.face
    crop = face.image[0]
    size = crop.shape[-1]
    panels = [_image(crop)]
    marked = (_image(crop) * 255).astype(np.uint8).copy()
    for points, colour in ((face.landmarks[0], (40, 90, 255)), (result.landmarks, (255, 40, 40))):
        for x, y in points.numpy():
            cv2.circle(marked, (int(round((x - 0.5) * 16)), int(round((y - 0.5) * 16))), 2 * 16, colour, -1,
                       cv2.LINE_AA, 4)
    panels.append(marked / 255.0)
    skin = face.skin_mask[0, 0].numpy()[..., None]
    panels.append(_image(crop) * (0.35 + 0.65 * skin) + np.array([0.0, 0.25, 0.0]) * skin)
    for stage in ("stage1", "stage2", "stage3"):
        panels.append(_image(result.renders[stage]) if stage in result.renders else np.full((size, size, 3), 0.85))
    panels.append(_image(F.interpolate(uv[None], size=size, mode="area")[0]))
    return np.concatenate([np.clip(p, 0, 1) for p in panels], 1)


def _render_on_photo(result: FaceResult) -> np.ndarray:
    """The last stage's render composited on the photo (on the crop without a photo)."""
    render = _image(result.renders[result.final_stage])
    mask = result.render_mask[0].numpy()
    if result.photo is None:
        return render
    photo = result.photo.astype(np.float32) / 255.0
    height, width = photo.shape[:2]
    matrix = opencv_affine(result.face.inverse_transform[0].double().numpy())  # crop -> photo
    warped = cv2.warpAffine(render.astype(np.float32), matrix, (width, height), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask.astype(np.float32), matrix, (width, height), flags=cv2.INTER_LINEAR)[..., None]
    return photo * (1 - alpha) + warped * alpha


def _landmarks_px(result: FaceResult) -> dict[str, torch.Tensor]:
    """The fitted 68 points in photo pixels (crop pixels without a photo): the jaw on the silhouette
    (``contour``, dlib's convention) and the model's fixed landmark vertices (``fixed``, AFLW2000-3D's)."""
    points = {"landmarks_68_contour_px": result.landmarks, "landmarks_68_fixed_px": result.landmarks_fixed}
    if result.face is None:
        return points
    inverse = result.face.inverse_transform[0]
    return {k: (v @ inverse[:, :2].T + inverse[:, 2]).float() for k, v in points.items()}


def _params_json(result: FaceResult, face_model: FaceModel) -> dict:
    out = {"face_model": face_model.name, "units": face_model.units}
    for name, value in result.params.to_dict().items():
        out[name] = [round(float(v), 6) for v in value.reshape(-1).tolist()]
    out["expression_names"] = face_model.exp_names
    for key, points in _landmarks_px(result).items():
        out[key] = [[round(float(x), 3), round(float(y), 3)] for x, y in points.tolist()]
    return out


def write_face_outputs(folder: Path, result: FaceResult, face_model: FaceModel, outputs: OutputConfig,
                       log_lines: list[str], run_info: dict) -> None:
    """Write every output of one face into ``folder`` (``metrics.json`` last)."""
    folder.mkdir(parents=True, exist_ok=True)
    maps = result.albedo_maps
    uv = maps.get("stage3", maps.get("stage2", result.uv_texture))
    if uv.shape[-1] < result.uv_texture.shape[-1]:
        uv = F.interpolate(uv[None], size=result.uv_texture.shape[-1], mode="bilinear", align_corners=False)[0]
    layout = {"uv_layout_id": face_model.uv_layout_id, "face_model": face_model.name}
    R = uv.shape[-1]
    with torch.no_grad():
        atlas = display_atlas(face_model, uv[None], eye_colours(result.metrics, result.params.gamma))[0]
    uv = atlas[..., :R]
    write_image(folder / "uv_albedo.png", _image(uv), text=layout)
    if head_texture_for(face_model, R).tiles > 1:
        write_image(folder / "uv_albedo_head.png", _image(atlas[..., R : 2 * R]), text=layout)
    if face_model.has_parts:
        write_image(folder / "uv_eyes_mouth.png", _image(atlas[..., 2 * R :]), text=layout)
    if result.albedo_1024 is not None:
        high = result.albedo_1024
        with torch.no_grad():
            high = head_texture_for(face_model, high.shape[-1]).to(high.device)(high[None])[0][..., :high.shape[-1]]
        write_image(folder / "uv_albedo_1024.png", _image(high), text=layout)
    if "stage2" in maps:
        write_image(folder / "uv_albedo_coarse.png", _image(maps["stage2"]), text=layout)
    write_image(folder / "uv_unwrapped.png", _image(result.uv_texture), text=layout)
    write_image(folder / "uv_confidence.png", _image(result.uv_confidence), text=layout)

    p = result.params
    with torch.no_grad():
        expressive = face_model.display_shape(p.identity, p.expression, p.gaze)[0].cpu().numpy()
        neutral = face_model.display_shape(p.identity)[0].cpu().numpy()
    write_mesh(folder / "mesh.obj", expressive, face_model, "mesh.mtl")
    write_mesh(folder / "mesh_neutral.obj", neutral, face_model, "mesh.mtl")
    if outputs.glb:
        _glb(folder / "mesh.obj", folder / "mesh.glb")
    write_photo_outputs(folder, result, face_model, log_lines, run_info, uv)


def write_photo_outputs(folder: Path, result: FaceResult, face_model: FaceModel, log_lines: list[str],
                        run_info: dict, uv: torch.Tensor | None = None) -> None:
    """The outputs of one photo's fit: ``coeffs.pt``/``.json``, ``render.png``, ``summary.png`` (its last panel
    ``uv``, default the final albedo map), ``loss.png``, ``log.txt`` and ``metrics.json`` (last)."""
    folder.mkdir(parents=True, exist_ok=True)
    if uv is None:
        uv = result.albedo_maps.get(result.final_stage, result.uv_texture)
    save_torch(folder / "coeffs.pt", {**{k: v.cpu() for k, v in result.params.to_dict().items()},
                                      **_landmarks_px(result), "face_model": face_model.name})
    write_json(folder / "coeffs.json", _params_json(result, face_model))
    write_image(folder / "render.png", _render_on_photo(result))
    write_image(folder / "summary.png", _summary(result, uv))
    write_image(folder / "loss.png", _loss_chart(result.histories))
    write_text(folder / "log.txt", "\n".join(log_lines) + "\n")
    metrics = {k: (None if isinstance(v, float) and not math.isfinite(v) else round(v, 5))
               for k, v in result.metrics.items()}
    write_json(folder / FINAL_OUTPUT, {
        "name": result.name,
        "source": result.face.info.source if result.face is not None else "",
        **metrics,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        **run_info,
    })


def write_person_outputs(folder: Path, person: str, results: list[FaceResult], face_model: FaceModel,
                         outputs: OutputConfig, log_lines: list[list[str]], run_info: dict) -> None:
    """The outputs of a joint fit of one person's photos: ``folder`` has the layout of one face (the shared
    albedo maps and neutral mesh; ``mesh.obj``, ``coeffs``, ``render.png`` and ``summary.png`` of the first
    photo), ``photos/<photo>/`` each photo's :func:`write_photo_outputs` (its pose, expression, light and
    render), and ``metrics.json`` lists the photos; written last. ``log_lines``: each photo's log lines."""
    for result, lines in zip(results, log_lines):
        write_photo_outputs(folder / "photos" / result.name, result, face_model, lines, run_info)
    first = results[0]
    seconds = {k: sum(r.seconds.get(k, 0.0) for r in results) for k in first.seconds}
    person_result = replace(first, name=person, seconds=seconds)
    all_lines = list(dict.fromkeys(line for lines in log_lines for line in lines))
    write_face_outputs(folder, person_result, face_model, outputs, all_lines,
                       {**run_info, "photos": [r.name for r in results]})
