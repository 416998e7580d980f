"""The texture asset a user opens: seams, flat fill, side views and identity of the uncomposited render.

Runs ``fitting.run`` (:func:`benchmarks.fit_setup.fit_photos`) on ``--limit``
shared photos (evenly spaced in name order, which mixes sources), completes
each ``uv_albedo.png`` into the whole-head texture atlas the meshes and
``render_3d_face.py`` use (:class:`models.head_texture.HeadTexture`) and
measures per face:

* **seam colour difference**: every UV seam of the head mesh (a mesh edge
  whose two triangles use different texture coordinates: the borders of the
  UV islands, the face/head border, the ears' and the lips' cuts) sampled
  on both sides, 1.5 texels inside each triangle from the edge's midpoint;
  CIE76 difference (sRGB -> CIELAB, D65); median and 90th percentile over
  the seam edges;
* **head tone difference**: CIE76 between the median colour (per sRGB
  channel) of the used texels the photo did not show (the head tile: scalp,
  back of the head and neck; the face tile's texels with zero
  ``uv_confidence.png``: ears, neck front, the far side) and that of the
  texels it showed (confidence above 0.5): whether the completed head has the
  face's skin tone or looks like a mask on a differently coloured head;
* **flat fill share**: the share of the texels the head mesh uses (both
  tiles) whose 5x5 neighbourhood has no variation (standard deviation below
  half a grey level in every channel);
* **identity of the uncomposited render**: dlib's face descriptor distance
  (as in :mod:`benchmarks.real_photos`) between the photo and a frontal
  render of the fitted shape with the head texture (and the eyeballs, teeth
  and sockets with the fit's ``uv_eyes_mouth.png``) under the ``frontal``
  light preset on grey (no photo pixels), and whether it is below dlib's
  same-person threshold 0.6; a render in which dlib finds no face counts
  as not below it;
* **detail at 1024** (fits run with ``--set outputs.uv_1024=true``): the
  RMS (grey levels) of the band above 512 texels (the map minus its
  2x-downsampled and re-enlarged self) of ``uv_albedo_1024.png`` over the
  texels the photo showed (``uv_confidence.png`` above 0.5), beside the same
  of the control without the photo's detail: ``uv_albedo.png`` enlarged
  (bicubic) and completed at 1024 like the map (the skin's grain added where
  it is flat), with the face's height in photo pixels (``face_px``): how
  much real detail the 1024 map carries, and how it follows the photo's
  resolution.

With ``--sheet_dir`` it also writes, per face, the photo beside renders at
yaw -90, -45, 0, 45, 90 and from above (pitch 50) under the ``studio``
light, and one contact sheet of all faces.

Usage::

    python -m benchmarks.texture_asset [--limit 8] [--output_dir DIR] [--sheet_dir DIR] [--quick]

Results: ``benchmarks/results/texture_asset[_quick].{json,md,csv}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from assets import load_installed_face_model
from models.colour import delta_e, srgb_to_lab
from models.face_model import FaceModel
from models.head_texture import HeadTexture, head_texture_for
from models.lighting import light_preset
from models.part_texture import display_atlas
from models.uv_layout import UVLayout
from models.view_rendering import contact_sheet, mesh_from_face_model, render_views
from utils.image_io import read_image, write_image

from . import common
from .fit_setup import add_fitting_args, add_photo_folder_args, fit_photos, photo_output_dir
from .real_photos import SAME_PERSON_THRESHOLD, IdentityEmbedder, select_photos

__all__ = ["seam_colour_difference", "flat_fill_share", "band_above_half", "detail_1024", "main"]

logger = logging.getLogger("uvapm.benchmarks")

VIEWS = (-90.0, -45.0, 0.0, 45.0, 90.0)
ABOVE_PITCH = 50.0


def _seam_sides(face_model: FaceModel, tiles: int, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Atlas UVs (E, 2) of both sides of every UV seam edge of the head mesh."""
    faces = face_model.head_faces.numpy()
    faces_uv = face_model.head_faces_uv.numpy()
    uvs = face_model.uvs.numpy() / [tiles, 1.0]
    corners = np.array([[0, 1], [1, 2], [2, 0]])
    edge_vertices = faces[:, corners].reshape(-1, 2)
    edge_uvs = faces_uv[:, corners].reshape(-1, 2)
    triangle = np.repeat(np.arange(len(faces)), 3)
    order = np.argsort(edge_vertices, 1)
    edge_vertices = np.take_along_axis(edge_vertices, order, 1)
    edge_uvs = np.take_along_axis(edge_uvs, order, 1)
    _, inverse, counts = np.unique(edge_vertices, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    shared = np.flatnonzero(counts[inverse] == 2)
    shared = shared[np.argsort(inverse[shared], kind="stable")].reshape(-1, 2)  # the two half-edges of each edge
    a, b = shared[:, 0], shared[:, 1]
    seam = (np.abs(uvs[edge_uvs[a]] - uvs[edge_uvs[b]]).max((1, 2)) > 1e-6)
    a, b = a[seam], b[seam]
    texel = np.array([1.0 / (tiles * resolution), 1.0 / resolution])

    def side(half_edge):
        midpoint = uvs[edge_uvs[half_edge]].mean(1)
        centroid = uvs[faces_uv[triangle[half_edge]]].mean(1)
        inward = (centroid - midpoint) / texel
        inward /= np.linalg.norm(inward, axis=1, keepdims=True).clip(1e-9)
        return torch.as_tensor(midpoint + 1.5 * inward * texel, dtype=torch.float32)

    return side(a), side(b)


def _sample(atlas: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    grid = torch.stack([2 * uv[:, 0] - 1, 1 - 2 * uv[:, 1]], -1)[None, :, None]
    return F.grid_sample(atlas[None], grid, mode="bilinear", align_corners=False)[0, :, :, 0].T


def seam_colour_difference(atlas: torch.Tensor, sides: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """CIE76 difference (E,) across each seam edge of an atlas (3, R, N * R) sampled at ``sides``."""
    return delta_e(srgb_to_lab(_sample(atlas, sides[0])), srgb_to_lab(_sample(atlas, sides[1])))


def flat_fill_share(atlas: torch.Tensor, used: torch.Tensor) -> float:
    """Share of the used texels (R, N * R) of an atlas (3, R, N * R) whose 5x5 neighbourhood is flat."""
    mean = F.avg_pool2d(atlas[None], 5, 1, 2, count_include_pad=False)
    std = (F.avg_pool2d(atlas[None] ** 2, 5, 1, 2, count_include_pad=False) - mean**2).clamp_min(0).sqrt()[0]
    flat = (std < 0.5 / 255).all(0)
    return float(flat[used].float().mean())


def head_tone_difference(atlas: torch.Tensor, used: torch.Tensor, confidence: torch.Tensor) -> float:
    """CIE76 between the median colour of an atlas's (3, R, N * R) used texels (R, N * R) unseen by the photo and
    that of the texels it showed, from the face tile's confidence (R, R)."""
    R = confidence.shape[-1]
    shown = torch.zeros_like(used)
    shown[:, :R] = confidence > 0.5
    unseen = used.clone()
    unseen[:, :R] &= confidence <= 0
    if not shown.any() or not unseen.any():
        return float("nan")
    medians = [atlas[:, m].median(1).values[:, None] for m in (shown, unseen)]
    return float(delta_e(srgb_to_lab(medians[0].T), srgb_to_lab(medians[1].T))[0])


def detail_1024(folder: Path, face_model: FaceModel) -> tuple[float, float]:
    """:func:`band_above_half` of a fit's ``uv_albedo_1024.png`` and of its control (``uv_albedo.png`` enlarged
    and completed by the 1024 :class:`~models.head_texture.HeadTexture`, as the map is) over the texels the
    photo showed (``uv_confidence.png`` above 0.5)."""
    load = lambda name: torch.from_numpy(read_image(folder / name).copy()).permute(2, 0, 1).float() / 255  # noqa: E731
    high, albedo = load("uv_albedo_1024.png"), load("uv_albedo.png")
    confidence = load("uv_confidence.png")[:1]
    seen = F.interpolate(confidence[None], size=1024, mode="bilinear", align_corners=False)[0, 0] > 0.5
    enlarged = F.interpolate(albedo[None], size=1024, mode="bicubic", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        control = head_texture_for(face_model, 1024)(enlarged)[0, :, :, :1024]
    return band_above_half(high, seen), band_above_half(control, seen)


def band_above_half(texture: torch.Tensor, used: torch.Tensor) -> float:
    """RMS (grey levels) over the ``used`` texels (R, R) of the band of ``texture`` (3, R, R) above R / 2 texels:
    the texture minus its 2x area-downsampled, bicubic re-enlarged self."""
    R = texture.shape[-1]
    low = F.interpolate(F.avg_pool2d(texture[None], 2), size=R, mode="bicubic", align_corners=False)[0]
    return float(((texture - low) ** 2).mean(0)[used].mean().sqrt()) * 255


def _frontal_identity(embedder: IdentityEmbedder, photo: np.ndarray, box, render: np.ndarray) -> float:
    import dlib

    detections = dlib.get_frontal_face_detector()(render, 1)
    if not detections:
        return float("nan")
    d = max(detections, key=lambda r: r.area())
    rendered = embedder(render, (d.left(), d.top(), d.right(), d.bottom()))
    return float(np.linalg.norm(embedder(photo, box) - rendered))


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.texture_asset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_photo_folder_args(parser, "texture_asset", "default 8 (1 with --quick)")
    parser.add_argument("--sheet_dir", help="write the side-view contact sheets here")
    add_fitting_args(parser)
    return parser.parse_args(argv)


def run(args, argv: list[str]) -> list[dict]:
    """The benchmark; returns the rows (one per face and a summary row)."""
    from fitting.structures import ProcessedFace

    name = "texture_asset_quick" if args.quick else "texture_asset"
    limit = args.limit if args.limit is not None else (1 if args.quick else 8)
    output_dir = photo_output_dir(args, name)
    photos = select_photos(Path(args.input_dir), limit)
    fit_dir, models = fit_photos(args, photos, output_dir)
    face_models: dict[str, FaceModel] = {}
    embedder = IdentityEmbedder()
    textures: dict[tuple[str, int], tuple[HeadTexture, torch.Tensor, tuple]] = {}
    records, sheets = [], []
    for photo in photos:
        folder = fit_dir / photo.stem
        if not (folder / "metrics.json").is_file():
            records.append({"face": photo.stem, "fitted": 0})
            continue
        model_name = json.loads((folder / "metrics.json").read_text())["face_model"]
        if model_name not in face_models:
            face_models[model_name] = FaceModel(load_installed_face_model(model_name))
        face_model = face_models[model_name]
        albedo = torch.from_numpy(read_image(folder / "uv_albedo.png").copy()).permute(2, 0, 1).float() / 255
        R = albedo.shape[-1]
        if (model_name, R) not in textures:
            texture = head_texture_for(face_model, R)
            used = UVLayout(face_model, R).mask[0]
            if texture.tiles > 1:
                used = torch.cat([used, texture.head_mask[0, 0]], -1)
            textures[model_name, R] = (texture, used.bool(), _seam_sides(face_model, texture.tiles, R))
        texture, used, sides = textures[model_name, R]
        with torch.no_grad():
            atlas = texture(albedo[None])[0]
        seams = seam_colour_difference(atlas, sides).numpy()
        confidence = read_image(folder / "uv_confidence.png")
        confidence = torch.from_numpy(confidence[..., 0] if confidence.ndim == 3 else confidence).float()[None, None]
        confidence = F.interpolate(confidence / 255, size=R, mode="area")[0, 0]
        coeffs = torch.load(folder / "coeffs.pt", weights_only=True)
        mesh = mesh_from_face_model(face_model, coeffs["identity"], coeffs["expression"], coeffs.get("gaze"))
        parts = folder / "uv_eyes_mouth.png"  # the fit's eyes, teeth and sockets (default colours without)
        parts = torch.from_numpy(read_image(parts).copy()).permute(2, 0, 1)[None] / 255 if parts.is_file() else None
        with torch.no_grad():
            display = display_atlas(face_model, albedo[None], parts_tile=parts)[0]
        frontal = render_views(mesh, display, [0.0], light_preset("frontal"), resolution=512)[0]
        grey = (frontal[:3] * frontal[3:] + 0.5 * (1 - frontal[3:])).permute(1, 2, 0).numpy()
        box = ProcessedFace.load(fit_dir / "processed_data" / f"{photo.stem}.pt").face_box[0].tolist()
        distance = _frontal_identity(embedder, read_image(photo), box,
                                      np.ascontiguousarray(grey * 255 + 0.5, dtype=np.uint8))
        record = {"face": photo.stem, "fitted": 1, "seam_dE_median": float(np.median(seams)),
                  "seam_dE_p90": float(np.percentile(seams, 90)), "seam_edges": len(seams),
                  "head_tone_dE": head_tone_difference(atlas, used, confidence),
                  "flat_fill_share": flat_fill_share(atlas, used), "frontal_id_distance": distance,
                  "same_person": float(np.isfinite(distance) and distance < SAME_PERSON_THRESHOLD),
                  "face_px": float(box[3] - box[1])}
        if (folder / "uv_albedo_1024.png").is_file():
            record["band_1024"], record["band_1024_enlarged"] = detail_1024(folder, face_model)
        records.append(record)
        if args.sheet_dir:
            studio = light_preset("studio")
            views = render_views(mesh, display, list(VIEWS), studio, resolution=384)
            views += render_views(mesh, display, [0.0], studio, resolution=384, pitch_deg=ABOVE_PITCH)
            picture = torch.from_numpy(read_image(folder / "render.png").copy()).permute(2, 0, 1).float() / 255
            picture = F.interpolate(picture[None], size=(384, 384), mode="area")[0]
            row = contact_sheet([torch.cat([picture, torch.ones_like(picture[:1])]), *views])
            row = row[:3] * row[3:] + (1 - row[3:])
            sheets.append(row)
            write_image(Path(args.sheet_dir) / f"{photo.stem}.png", row.permute(1, 2, 0).numpy())
    if sheets:
        write_image(Path(args.sheet_dir) / "contact_sheet.png", torch.cat(sheets, 1).permute(1, 2, 0).numpy())
    fitted = [r for r in records if r["fitted"]]
    rows = [dict(r) for r in fitted]
    if fitted:
        rows.append({"face": "all (median / mean)",
                     "fitted": f"{len(fitted)}/{len(records)}",
                     "seam_dE_median": float(np.median([r["seam_dE_median"] for r in fitted])),
                     "seam_dE_p90": float(np.median([r["seam_dE_p90"] for r in fitted])),
                     "seam_edges": fitted[0]["seam_edges"],
                     "head_tone_dE": float(np.nanmedian([r["head_tone_dE"] for r in fitted])),
                     "flat_fill_share": float(np.mean([r["flat_fill_share"] for r in fitted])),
                     "frontal_id_distance": float(np.nanmean([r["frontal_id_distance"] for r in fitted])),
                     "same_person": float(np.mean([r["same_person"] for r in fitted])),
                     "face_px": float(np.median([r["face_px"] for r in fitted])),
                     **{k: float(np.median([r[k] for r in fitted])) for k in ("band_1024", "band_1024_enlarged")
                        if all(k in r for r in fitted)}})
    notes = (
        f"{len(photos)} photos from {args.input_dir}; fitting outputs in {fit_dir}. Seams: CIE76 across every UV "
        "seam edge of the ICT head mesh (both tiles of the atlas), 1.5 texels inside each side; summary row: the "
        "median over faces of each face's median and 90th percentile. head_tone_dE: CIE76 between the median "
        "colours of the atlas's used texels the photo did not show (head tile, face-tile texels of zero confidence) "
        "and of those it showed (confidence > 0.5); summary: median over faces. Flat fill: share of used texels whose "
        "5x5 standard deviation is below 0.5/255 in every channel. frontal_id_distance: dlib descriptor distance "
        "between the photo and a frontal uncomposited render (frontal light, grey background; NaN where dlib "
        f"finds no face in the render); same_person: below {SAME_PERSON_THRESHOLD}. face_px: the face box's height "
        "in photo pixels. band_1024 (fits with outputs.uv_1024): RMS in grey levels of the band above 512 texels of "
        "uv_albedo_1024.png over the texels the photo showed (confidence > 0.5), band_1024_enlarged: the same of "
        "uv_albedo.png enlarged (bicubic) and completed at 1024 like the map (skin grain where flat). "
        f"{models.description}"
    )
    columns = ["face", "fitted", "seam_dE_median", "seam_dE_p90", "seam_edges", "head_tone_dE", "flat_fill_share",
               "frontal_id_distance", "same_person", "face_px", "band_1024", "band_1024_enlarged"]
    common.report(name, "The texture asset: seams, flat fill, identity of the uncomposited render", rows, columns,
                  "python -m benchmarks.texture_asset " + " ".join(argv), notes)
    common.write_csv(name, records, columns)
    return rows


def main(argv=None) -> int:
    return common.benchmark_main(argv, _parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
