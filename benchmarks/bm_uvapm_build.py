"""Benchmark of the UVAPM build: time and peak memory against the number of maps, and imputation accuracy.

1. **Scaling.** Synthetic UV maps (a smooth low-rank per-channel model, 8-bit
   PNG) are written to a temporary folder; for each N the real command
   ``python -m models.uv_albedo_model build`` runs in a subprocess, whose
   wall time and peak resident memory (``os.wait4`` rusage) are recorded. A
   quarter of the maps carry a confidence map hiding a band of rows, which
   switches on the EM passes. Memory should stay flat in N: the build keeps
   O(R^2 (K + p)) per channel, never the maps.
2. **Imputation accuracy** (in memory, 32x32, 400 maps, K = 5, half of the
   maps with a third of the texels at confidence 0 holding garbage): sine of
   the largest principal angle to the true subspace and the largest relative
   std error, for no weighting, mean fill and EM with 0..10 extra passes.

Usage::

    python -m benchmarks.bm_uvapm_build            # N in 200 1000 2000, 256x256, K = 100
    python -m benchmarks.bm_uvapm_build --quick    # N in 50 100 200, 64x64, K = 20

Results go to ``benchmarks/results/bm_uvapm_build_{scaling,imputation}[_quick].{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.config import UVAPMBuildConfig
from models.uv_albedo_model.build import streaming_channel_pca
from models.uv_albedo_model.command import DEFAULT_CONFIG
from utils.config import load_config
from utils.image_io import write_image

from .common import REPO, report


def smooth_model(resolution: int, K: int, seed: int = 0):
    """Mean (3, D), orthonormal smooth basis (3, K, D) and std (3, K) of a synthetic albedo model.

    Component k moves a typical texel by 0.08 .. 0.01 (geometric in k), whatever the resolution.
    """
    rng = np.random.default_rng(seed)
    rows, cols = (np.mgrid[0:resolution, 0:resolution] + 0.5) / resolution
    mean = np.stack([0.62 + 0.1 * cols, 0.45 + 0.1 * rows, 0.35 + 0.05 * rows * cols]).reshape(3, -1)
    freqs = [(fx, fy) for fx in range(6) for fy in range(6)][: max(K + 3, 8)]
    basis = []
    for _ in range(3):
        waves = np.stack([np.cos(np.pi * (fx * cols + fy * rows + rng.uniform())).ravel() for fx, fy in freqs], 1)
        basis.append(np.linalg.qr(waves @ rng.standard_normal((len(freqs), K)))[0].T)
    std = np.geomspace(0.08, 0.01, K)[None] * np.array([[1.0], [0.9], [0.8]]) * np.sqrt(mean.shape[1])
    return mean, np.stack(basis), std


def draw(mean, basis, std, n, noise, rng):
    coeffs = rng.standard_normal((n, *std.shape))
    return mean + np.einsum("nck,ck,ckd->ncd", coeffs, std, basis) + noise * rng.standard_normal((n, *mean.shape))


def write_dataset(folder: Path, count: int, resolution: int, K: int) -> None:
    mean, basis, std = smooth_model(resolution, K)
    rng = np.random.default_rng(1)
    band = slice(resolution // 5, 2 * resolution // 5)
    for start in range(0, count, 100):
        maps = np.clip(draw(mean, basis, std, min(100, count - start), 0.01, rng), 0, 1)
        for i, flat in enumerate(maps, start):
            write_image(folder / f"uv{i:05d}.png", flat.reshape(3, resolution, resolution).transpose(1, 2, 0))
            if i % 4 == 0:
                conf = np.ones((resolution, resolution))
                conf[band] = 0
                write_image(folder / f"uv{i:05d}_conf.png", conf)


def run_build(folder: Path, output: Path, args) -> dict:
    command = [sys.executable, "-m", "models.uv_albedo_model", "build", "--input_dir", str(folder),
               "--output", str(output), "--components", str(args.components), "--resolution", str(args.resolution),
               "--uv_layout_id", "benchmark", "--device", args.device, "--quiet"]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read().decode()
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"build failed:\n{stderr}")
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def import_baseline() -> float:
    process = subprocess.Popen([sys.executable, "-c", "import models.uv_albedo_model.build"], cwd=REPO)
    _, _, usage = os.wait4(process.pid, 0)
    return round(usage.ru_maxrss / 1024, 1)


def scaling(args) -> list[dict]:
    defaults = load_config(UVAPMBuildConfig, DEFAULT_CONFIG)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bm_uvapm_") as tmp:
        tmp = Path(tmp)
        all_maps = tmp / "all"
        start = time.perf_counter()
        write_dataset(all_maps, max(args.sizes), args.resolution, args.components)
        print(f"wrote {max(args.sizes)} synthetic {args.resolution}x{args.resolution} maps in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        for n in args.sizes:
            folder = tmp / f"n{n}"
            folder.mkdir()
            for path in sorted(all_maps.glob("uv*.png")):
                if int(path.stem[2:7]) < n:
                    (folder / path.name).symlink_to(path)
            result = run_build(folder, tmp / f"n{n}.npz", args)
            passes = 3 + defaults.power_iters + defaults.em_passes  # mean, sketch, final + refinements
            rows.append({"maps": n, "with_confidence": (n + 3) // 4, "passes": passes, **result,
                         "ms_per_map_pass": round(1000 * result["seconds"] / (n * passes), 2)})
            print(rows[-1], flush=True)
    return rows


def accuracy() -> list[dict]:
    resolution, K, N = 32, 5, 400
    mean, basis, std = smooth_model(resolution, K, seed=2)
    rng = np.random.default_rng(3)
    maps = draw(mean, basis, std, N, 0.002, rng).reshape(N, 3, resolution, resolution).astype(np.float32)
    complete = maps.copy()
    conf = np.ones((N, 1, resolution, resolution), np.float32)
    maps[: N // 2, :, 6:17] = rng.uniform(0, 1, maps[: N // 2, :, 6:17].shape)
    conf[: N // 2, :, 6:17] = 0

    def batches(data, weighted):
        return [(torch.from_numpy(data[i: i + 50]), torch.from_numpy(conf[i: i + 50]) if weighted else None)
                for i in range(0, N, 50)]

    variants = [("reference: nothing hidden", complete, False, {}),
                ("none (confidence ignored)", maps, False, {}),
                ("mean fill", maps, True, {"imputation": "mean"})]
    variants += [(f"EM, em_passes={p}" + (" (default)" if p == 6 else ""), maps, True, {"em_passes": p})
                 for p in (0, 2, 6, 10, 20)]
    rows = []
    for name, data, weighted, kwargs in variants:
        start = time.perf_counter()
        pca = streaming_channel_pca(batches(data, weighted), K, **kwargs)
        sine = max(float(np.sqrt(max(0.0, 1 - np.linalg.svd(a @ b.T, compute_uv=False).min() ** 2)))
                   for a, b in zip(basis, pca.basis.numpy()))
        rows.append({"imputation": name, "largest_sine": round(sine, 3),
                     "std_error": round(float(np.abs(pca.std.numpy() / std - 1).max()), 3),
                     "mean_error": round(float(np.abs(pca.mean.numpy() - mean).max()), 4),
                     "seconds": round(time.perf_counter() - start, 2)})
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N in 50 100 200 at 64x64 with K = 20")
    parser.add_argument("--sizes", type=int, nargs="+", help="numbers of maps (default 200 1000 2000)")
    parser.add_argument("--resolution", type=int, help="map side (default 256)")
    parser.add_argument("--components", type=int, help="K per channel (default 100)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    quick = {"sizes": [50, 100, 200], "resolution": 64, "components": 20}
    full = {"sizes": [200, 1000, 2000], "resolution": 256, "components": 100}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    environment = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                   "torch_threads": torch.get_num_threads(), "device": args.device,
                   "resolution": args.resolution, "components": args.components,
                   "import_baseline_rss_mib": import_baseline()}
    print(environment, flush=True)
    scaling_rows = scaling(args)
    accuracy_rows = accuracy()

    suffix = "_quick" if args.quick else ""
    command = f"python -m benchmarks.bm_uvapm_build{' --quick' if args.quick else ''}"
    report(f"bm_uvapm_build_scaling{suffix}",
           f"UVAPM build time and peak memory against N ({args.resolution}x{args.resolution} maps, "
           f"K = {args.components}, {args.device})", scaling_rows, list(scaling_rows[0]), command,
           notes=f"Importing the builder alone peaks at {environment['import_baseline_rss_mib']} MiB.")
    report(f"bm_uvapm_build_imputation{suffix}",
           "UVAPM build: imputation of low-confidence texels (32x32, 400 maps, K = 5)", accuracy_rows,
           list(accuracy_rows[0]), command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
