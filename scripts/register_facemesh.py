"""Tie MediaPipe FaceMesh's 478 points to the iBUG-68 set and to a face model's surface, from photos.

    python scripts/register_facemesh.py --photos ../shared/data/faces/single --work_dir /tmp/facemesh_registration \\
        --output_dir checkpoints/default [--steps collect,ibug68,surface,report] [--rounds 3] [--face_model ict]

Steps (each caches its results in ``--work_dir``):

``collect``
    Every photo preprocessed with dlib's 68-point predictor (independent of
    FaceMesh), and FaceMesh run in the same face box; both are kept in
    ``processed_data/`` (a :class:`~fitting.structures.ProcessedFace` with
    dlib's 68 points and FaceMesh's dense points).
``ibug68``
    For each of the 68 points, the pair of FaceMesh points and the
    interpolation weight whose position is closest to dlib's point, median
    distance over the near-frontal faces (nose tip within 6 % of the eye
    distance of the eyes' mid-line, where dlib's jaw contour is the fixed
    outline FaceMesh also marks). Writes ``facemesh_ibug68.npz``.
``surface``
    Round 0 fits the near-frontal faces to their dlib points (stage 1 with the
    sparse landmarks, 15 refinement steps). Then, for each of them that fits well (landmark
    residual under 0.03 of the eye distance), every FaceMesh point that lies on
    the rendered face with its surface facing the camera (cosine above 0.3)
    is located on the fitted mesh: the triangle under it and its
    barycentric coordinates, carried to the model's mean shape. The
    per-point median over faces, snapped to the mean shape's surface, is the
    registration; its spread (median distance of the faces' positions to it,
    in mm) sets the point's trust ``1 / (1 + (spread / 2 mm)^2)``, and a point
    seen on fewer than 20 % of the faces (or an iris point, which lies on the
    eyeball the model does not have) gets trust 0. Rounds 1..R fit the faces to
    their dense points with the registration so far and register again.
    Writes ``facemesh_<face_model>.npz`` (:mod:`models.surface_points`).
``synthetic``
    The same registration on renders whose geometry is known exactly: ``--renders``
    ICT heads drawn from the model's prior (|yaw| up to 40 deg, pitch up to
    15 deg, a mildly coloured SH light), textured with the full unwrapped
    textures (eyes, brows and lips kept) of near-frontal photos of the set,
    composited on crops of ``--backgrounds`` and JPEG-compressed, go through
    the real preprocessing; every FaceMesh point is located on the *true*
    mesh under it. No fit stands between FaceMesh and the surface, so the
    registration carries no fit error; its risk is FaceMesh behaving
    differently on renders than on photos. Writes
    ``facemesh_<face_model>_synthetic.npz``; the pipeline uses
    ``facemesh_<face_model>.npz``, whichever registration is copied there
    (the choice and its reasons are in the model card).
``report``
    The spread per FaceMesh region and a picture of the points on the mean
    shape (``facemesh_<face_model>.png`` in the work folder).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils.cli import add_logging_args, setup_logging  # noqa: E402

logger = logging.getLogger("uvapm.register")

STEPS = ("collect", "ibug68", "surface", "synthetic", "report")
#: Near-frontal: the nose tip's offset from the eyes' mid-line, as a fraction of the eye distance, at most.
FRONTAL_OFFSET = 0.06
#: Faces whose fit is worse than this (landmark residual / eye distance) are not used to register.
MAX_RESIDUAL = 0.03
#: A point is registered from faces where its surface faces the camera at least this much (cosine).
MIN_FACING = 0.3
#: Spread (mm) at which a point's trust halves.
TRUST_SPREAD_MM = 2.0
#: Points seen on fewer than this share of the registering faces get no trust.
MIN_COVERAGE = 0.2
#: FaceMesh's iris points (5 per eye), on the eyeballs.
IRIS = range(468, 478)


def _frontal(landmarks):
    """(N,) bool: near-frontal faces, from their (N, 68, 2) iBUG points."""
    import numpy as np

    eyes = np.linalg.norm(landmarks[:, 36] - landmarks[:, 45], axis=1)
    mid = (landmarks[:, 36] + landmarks[:, 45]) / 2
    return np.abs(landmarks[:, 30, 0] - mid[:, 0]) / eyes < FRONTAL_OFFSET


def step_collect(args) -> None:
    import numpy as np
    import torch
    from tqdm import tqdm

    from fitting.config import PreprocessConfig
    from fitting.preprocess.facemesh import FaceMesh
    from fitting.preprocess.folder import preprocess_folder
    from fitting.structures import ProcessedFace
    from utils.image_io import read_image

    processed = args.work / "processed_data"
    config = PreprocessConfig(landmarks="dlib", visualise=False)
    preprocess_folder(args.photos, processed, config, progress=not args.quiet)
    mesh = FaceMesh()
    found = 0
    paths = sorted(processed.glob("*.pt"))
    for path in tqdm(paths, desc="FaceMesh", disable=args.quiet):
        face = ProcessedFace.load(path)
        points = mesh(read_image(face.info.source), face.face_box[0].numpy())
        if points is None:
            face.dense_landmarks.zero_()
            face.dense_valid.zero_()
        else:
            transform = face.transform[0].double().numpy()
            zoom = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
            crop = np.concatenate([points[:, :2] @ transform[:, :2].T + transform[:, 2], zoom * points[:, 2:]], 1)
            face.dense_landmarks = torch.from_numpy(crop).float()[None]
            face.dense_valid = torch.ones(1)
            found += 1
        face.save(path)
    logger.info("FaceMesh found %d of %d faces", found, len(paths))


def _load_collected(args):
    import numpy as np

    from fitting.structures import ProcessedFace

    names, faces = [], []
    for path in sorted((args.work / "processed_data").glob("*.pt")):
        face = ProcessedFace.load(path)
        if face.dense_valid[0] > 0:
            names.append(path.stem)
            faces.append(face)
    sparse = np.stack([f.landmarks[0].numpy() for f in faces]).astype(np.float64)
    dense = np.stack([f.dense_landmarks[0, :, :2].numpy() for f in faces]).astype(np.float64)
    return names, faces, sparse, dense


def step_ibug68(args) -> dict:
    import numpy as np

    from utils.atomic import save_npz

    _, _, sparse, dense = _load_collected(args)
    frontal = _frontal(sparse)
    sparse, dense = sparse[frontal], dense[frontal]
    eyes = np.linalg.norm(sparse[:, 36] - sparse[:, 45], axis=1)
    first, second, weight, errors = [], [], [], []
    steps = np.linspace(0.0, 1.0, 21)
    for k in range(68):
        distance = np.linalg.norm(dense - sparse[:, k : k + 1], axis=2) / eyes[:, None]  # (N, 478)
        candidates = np.argsort(np.median(distance, 0))[:12]
        best = (np.inf, 0, 0, 0.0)
        for i in candidates:
            for j in candidates:
                if j < i:
                    continue
                for t in steps if j > i else (0.0,):
                    point = (1 - t) * dense[:, i] + t * dense[:, j]
                    error = float(np.median(np.linalg.norm(point - sparse[:, k], axis=1) / eyes))
                    if error < best[0]:
                        best = (error, int(i), int(j), float(t))
        errors.append(best[0])
        first.append(best[1])
        second.append(best[2])
        weight.append(best[3])
    save_npz(args.output_dir / "facemesh_ibug68.npz", {"first": np.array(first), "second": np.array(second),
                                                       "t": np.array(weight)})
    summary = {"faces": int(frontal.sum()), "median_error": errors, "mean_median_error": float(np.mean(errors))}
    (args.work / "ibug68.json").write_text(json.dumps(summary, indent=1))
    logger.info("iBUG-68 from FaceMesh on %d near-frontal faces: median distance to dlib's points %.4f of the eye "
                "distance (mean over the 68)", summary["faces"], summary["mean_median_error"])
    return summary


def _fit(face_model, faces, dense_points, batch_size: int = 8):
    """Stage 1 (landmark fit and photometric refinement) of every face; returns the parameters."""
    import torch

    from fitting.config import ShapeFitConfig
    from fitting.shape import ShapeFitter
    from fitting.structures import FaceBatch, FitState

    config = ShapeFitConfig()
    config.refine.optim.steps = 15
    fitter = ShapeFitter(face_model, config, dense_points=dense_points)
    params, residuals = [], []
    for start in range(0, len(faces), batch_size):
        chunk = faces[start : start + batch_size]
        batch = FaceBatch.from_faces([str(i) for i in range(len(chunk))], chunk, [None] * len(chunk), 224)
        torch.manual_seed(0)
        state = fitter(batch, FitState())
        params.append(state.params)
        residuals.append(state.landmark_residual)
    return params, torch.cat(residuals)


def _register(face_model, faces, params, use):
    """Per-face canonical (mean-shape) positions (N, 478, 3) of the FaceMesh points, NaN where not seen."""
    import numpy as np
    import torch

    from models.camera import PinholeCamera
    from models.rasterize import perspective_barycentrics
    from models.renderer import Renderer

    camera = PinholeCamera(face_model.camera_distance, 224)
    renderer = Renderer.for_face_model(face_model, camera)
    out = np.full((len(faces), 478, 3), np.nan)
    mean = face_model.mean_shape
    flat = [p for chunk in params for p in [chunk.select(slice(i, i + 1)) for i in range(chunk.batch_size)]]
    for n, (face, p) in enumerate(zip(faces, flat)):
        if not use[n]:
            continue
        with torch.no_grad():
            vertices = p.posed(face_model).vertices
            normals = face_model.vertex_normals(vertices)
            renderer.invalidate()
            render = renderer(vertices, vertex_colors=torch.zeros_like(vertices), normals=normals)
        points = face.dense_landmarks[0, :, :2]
        col, row = points[:, 0].floor().long(), points[:, 1].floor().long()
        inside = (col >= 0) & (col < 224) & (row >= 0) & (row < 224)
        triangle = torch.full((478,), -1, dtype=torch.long)
        triangle[inside] = render.pix_to_face[0, row[inside], col[inside]]
        seen = triangle >= 0
        corners = face_model.faces[triangle.clamp_min(0)]
        verts_px, depth = camera.project(vertices)[0], camera.depth(vertices)[0]
        bary = perspective_barycentrics(points, verts_px[corners], depth[corners]).clamp_min(0)
        bary = bary / bary.sum(1, keepdim=True).clamp_min(1e-8)
        normal = torch.nn.functional.normalize((normals[0][corners] * bary[..., None]).sum(1), dim=-1)
        position = (vertices[0][corners] * bary[..., None]).sum(1)
        to_camera = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, camera.distance]) - position, dim=-1)
        seen &= (normal * to_camera).sum(-1) > MIN_FACING
        canonical = (mean[corners] * bary[..., None]).sum(1)
        out[n][seen.numpy()] = canonical[seen].numpy()
    return out


def _aggregate(face_model, positions):
    """The registration (SurfacePoints) from per-face canonical positions, and its statistics."""
    import numpy as np
    import torch

    from models.surface_points import SurfacePoints, project_to_surface

    seen = np.isfinite(positions[..., 0])
    coverage = seen.mean(0)
    median = np.zeros(positions.shape[1:])
    for i in range(positions.shape[1]):
        if seen[:, i].any():
            median[i] = np.median(positions[seen[:, i], i], axis=0)
    mm = face_model.metres_per_unit * 1000.0
    spread = np.array([np.median(np.linalg.norm(positions[seen[:, i], i] - median[i], axis=1)) * mm
                       if seen[:, i].any() else np.inf for i in range(positions.shape[1])])
    corners, bary, _ = project_to_surface(median, face_model.mean_shape.numpy(), face_model.faces.numpy())
    trust = 1.0 / (1.0 + (spread / TRUST_SPREAD_MM) ** 2)
    trust[(coverage < MIN_COVERAGE) | ~np.isfinite(spread)] = 0.0
    trust[list(IRIS)] = 0.0
    points = SurfacePoints(torch.from_numpy(corners), torch.from_numpy(bary).float(), torch.from_numpy(trust).float(),
                           face_model.name, "facemesh-478")
    return points, {"coverage": coverage.tolist(), "spread_mm": np.where(np.isfinite(spread), spread, -1).tolist(),
                    "trust": trust.tolist()}


def step_surface(args) -> dict:
    import numpy as np

    from assets import load_installed_face_model
    from models.face_model import FaceModel
    from models.surface_points import save_surface_points

    face_model = FaceModel(load_installed_face_model(args.face_model))
    names, faces, sparse, _ = _load_collected(args)
    frontal = _frontal(sparse)
    faces = [f for f, keep in zip(faces, frontal) if keep]  # only near-frontal faces register
    frontal = np.ones(len(faces), bool)
    dense_points, rounds, previous = None, [], None
    use = None
    for round_index in range(args.rounds + 1):
        params, residuals = _fit(face_model, faces, dense_points)
        if use is None:  # the faces that fit their dlib points well register in every round
            use = frontal & (residuals.numpy() < MAX_RESIDUAL)
        positions = _register(face_model, faces, params, use)
        dense_points, stats = _aggregate(face_model, positions)
        located = (dense_points.barycentric[:, :, None] * face_model.mean_shape[dense_points.vertex_index]).sum(1)
        moved = (float(np.median((located - previous).norm(dim=1).numpy()) * face_model.metres_per_unit * 1000)
                 if previous is not None else None)
        previous = located
        trusted = np.array(stats["trust"]) > 0
        rounds.append({"round": round_index, "faces_used": int(use.sum()), "moved_median_mm": moved,
                       "median_spread_mm": float(np.median(np.array(stats["spread_mm"])[trusted])),
                       "median_residual": float(np.median(residuals.numpy()[use]))})
        logger.info("round %d (%s): %d faces, median spread %.2f mm, median residual %.4f%s", round_index,
                    "dlib 68" if round_index == 0 else "dense", use.sum(), rounds[-1]["median_spread_mm"],
                    rounds[-1]["median_residual"], "" if moved is None else f", points moved {moved:.2f} mm")
    save_surface_points(args.output_dir / f"facemesh_{args.face_model}.npz", dense_points, face_model.num_vertices)
    summary = {"rounds": rounds, **stats, "near_frontal": len(faces)}
    (args.work / "surface.json").write_text(json.dumps(summary))
    return summary


#: Photos whose textures dress the landmark benchmark's heads; the registration leaves them out.
def _benchmark_photos() -> set[str]:
    from benchmarks.landmarks import TEXTURE_PHOTOS

    return {Path(n).stem for n in TEXTURE_PHOTOS}


def step_synthetic(args) -> dict:
    import cv2
    import numpy as np
    import torch
    from tqdm import tqdm

    from assets import load_installed_face_model
    from fitting.config import PreprocessConfig
    from fitting.preprocess.preprocessor import PreprocessError, Preprocessor
    from models.face_model import FaceModel
    from models.surface_points import save_surface_points
    from testing.synthetic import make_synthetic_faces
    from testing.textures import photo_textures
    from utils.image_io import list_images, read_image

    face_model = FaceModel(load_installed_face_model(args.face_model))
    names, faces, sparse, _ = _load_collected(args)
    excluded = _benchmark_photos() | {"0026_deca", "0027_deca", "0028_deca", "0029_deca", "0031_deca", "0032_deca",
                                      "0033_deca", "0034_deca"}  # the AFLW2000-3D development photos
    chosen = [f for n, f, keep in zip(names, faces, _frontal(sparse)) if keep and n not in excluded]
    chosen = chosen[:: max(1, len(chosen) // args.textures)][: args.textures]
    textures = photo_textures(face_model, [Path(f.info.source) for f in chosen])
    backgrounds = list_images(args.backgrounds)
    preprocessor = Preprocessor(PreprocessConfig(all_faces=True, visualise=False))
    rng = np.random.default_rng(args.seed)
    true_faces, true_params = [], []
    for index in tqdm(range(args.renders), desc="renders", disable=args.quiet):
        background = read_image(backgrounds[rng.integers(len(backgrounds))])
        side = int(rng.uniform(0.4, 1.0) * min(background.shape[:2]))
        y, x = rng.integers(0, background.shape[0] - side + 1), rng.integers(0, background.shape[1] - side + 1)
        background = cv2.resize(background[y : y + side, x : x + side], (512, 512), interpolation=cv2.INTER_AREA)
        scene = make_synthetic_faces(
            face_model, 1, seed=int(rng.integers(2**31)), max_yaw_deg=40.0, max_pitch_deg=15.0,
            light_strength=0.15, light_jitter=0.02, albedo_map=textures[rng.integers(len(textures))][None],
            background=torch.from_numpy(background).permute(2, 0, 1)[None].float() / 255, image_size=512, head=True)
        photo = (scene.image[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        _, jpeg = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        photo = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        try:
            found = preprocessor(photo, source=f"render{index}")
        except PreprocessError:
            continue
        truth = scene.landmarks[0].numpy()
        centre = truth.mean(0)
        face = min(found, key=lambda f: np.linalg.norm(f.landmarks_original[0].numpy().mean(0) - centre))
        if face.dense_valid[0] == 0 or np.linalg.norm(face.landmarks_original[0].numpy().mean(0) - centre) > 20:
            continue
        # the true pose in the processed crop's camera: the crop is the render scaled and shifted
        transform = face.transform[0].double().numpy()
        face.dense_landmarks[0, :, :2] = torch.from_numpy(
            (face.dense_landmarks[0, :, :2].double().numpy() - transform[:, 2]) / transform[0, 0] * 224 / 512
        ).float()
        true_faces.append(face)
        true_params.append(scene.params)
    positions = _register(face_model, true_faces, true_params, np.ones(len(true_faces), bool))
    points, stats = _aggregate(face_model, positions)
    save_surface_points(args.output_dir / f"facemesh_{args.face_model}_synthetic.npz", points,
                        face_model.num_vertices)
    trusted = np.array(stats["trust"]) > 0
    summary = {"renders": args.renders, "registered": len(true_faces), "textures": len(textures), **stats,
               "median_spread_mm": float(np.median(np.array(stats["spread_mm"])[trusted]))}
    (args.work / "synthetic.json").write_text(json.dumps(summary))
    logger.info("synthetic registration: %d of %d renders, %d textures, median spread %.2f mm", len(true_faces),
                args.renders, len(textures), summary["median_spread_mm"])
    return summary


def step_report(args) -> None:
    import cv2
    import numpy as np

    from assets import load_installed_face_model
    from models.camera import PinholeCamera
    from models.face_model import FaceModel
    from models.renderer import Renderer
    from models.surface_points import load_surface_points
    from utils.image_io import write_image

    face_model = FaceModel(load_installed_face_model(args.face_model))
    points = load_surface_points(args.output_dir / f"facemesh_{args.face_model}.npz", face_model.num_vertices)
    summary = json.loads((args.work / "surface.json").read_text())
    size = 768
    camera = PinholeCamera(face_model.camera_distance * 0.7, size)
    vertices = face_model.mean_shape[None]
    normals = face_model.vertex_normals(vertices)
    shade = normals[..., 2:].clamp_min(0).expand(-1, -1, 3) * 0.8 + 0.15
    image = Renderer.for_face_model(face_model, camera)(vertices, vertex_colors=shade, normals=normals).image
    picture = (image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8).copy()
    located = points.locate(vertices)[0]
    pixels = camera.project(located[None])[0].numpy()
    for (x, y), trust in zip(pixels, points.trust.numpy()):
        colour = (int(255 * (1 - trust)), int(200 * trust), 40) if trust > 0 else (120, 120, 255)
        cv2.circle(picture, (int(x), int(y)), 3, colour, -1, cv2.LINE_AA)
    write_image(args.work / f"facemesh_{args.face_model}.png", picture)
    spread = np.array(summary["spread_mm"])
    trust = points.trust.numpy()
    lines = [f"{(trust > 0).sum()} of {len(trust)} points trusted; spread of the trusted points (mm): median "
             f"{np.median(spread[trust > 0]):.2f}, 90th percentile {np.percentile(spread[trust > 0], 90):.2f}"]
    for entry in summary["rounds"]:
        lines.append(json.dumps(entry))
    (args.work / "report.txt").write_text("\n".join(lines) + "\n")
    logger.info("%s", lines[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default=str(REPO.parent / "shared" / "data" / "faces" / "single"))
    parser.add_argument("--work_dir", default="/tmp/facemesh_registration")
    parser.add_argument("--output_dir", default=str(REPO / "checkpoints" / "default"))
    parser.add_argument("--face_model", default="ict", help="installed face model to register to (default: ict)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--rounds", type=int, default=2, help="registration rounds with the dense fit (default: 2)")
    parser.add_argument("--renders", type=int, default=200, help="synthetic renders to register on (default: 200)")
    parser.add_argument("--textures", type=int, default=40, help="photos whose textures dress them (default: 40)")
    parser.add_argument("--backgrounds", default=str(REPO.parent / "shared" / "data" / "faces" / "multi"))
    parser.add_argument("--seed", type=int, default=0)
    add_logging_args(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    args.work, args.output_dir, args.photos = Path(args.work_dir), Path(args.output_dir), Path(args.photos)
    args.work.mkdir(parents=True, exist_ok=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    steps = args.steps.split(",")
    for step in STEPS:
        if step in steps:
            globals()[f"step_{step}"](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
