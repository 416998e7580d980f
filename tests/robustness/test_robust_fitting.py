"""``python -m fitting.run`` end to end on bad input, failing optimisations and failing output writes.

The runs use the small models and sizes of tests/test_run.py and stage 1 (the
failures tested here do not depend on the later stages), so each takes
seconds. A failing face is one ERROR line and one row of failures.tsv; the
other faces complete; the exit code is 1; nothing half-written is left; a
rerun resumes.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import fitting.shape
from fitting.config import OptimConfig
from fitting.optim import OptimizationError, minimize
from fitting.run import main
from tests.robustness.helpers import PHOTOS, assert_outputs_complete, no_traceback, read_failures, run_args
from utils.image_io import write_image

ALWAYS = "always"


def _nan_injecting(real_minimize, plan: list):
    """``minimize`` whose k-th call sees a NaN loss at the closure evaluations ``plan[k]`` (a set, or ALWAYS)."""
    def wrapper(groups, closure, config, on_step=None):
        bad = plan.pop(0) if plan else set()
        evaluations = itertools.count()

        def poisoned():
            terms = dict(closure())
            if bad == ALWAYS or next(evaluations) in bad:
                first = next(iter(terms))
                terms[first] = terms[first] * float("nan")
            return terms

        return real_minimize(groups, poisoned, config, on_step)

    return wrapper


# ----------------------------------------------------------------------------- minimize() itself


def _quadratic(target: torch.Tensor, poison: dict[int, str]):
    """Closure of ``sum((x - target)^2)`` per row, poisoned at given evaluations ('loss' or 'grad')."""
    x = torch.zeros_like(target, requires_grad=True)
    evaluations = itertools.count()

    def closure():
        k = next(evaluations)
        loss = (x - target).square().sum(1)
        if poison.get(k) == "loss":
            loss = loss * float("nan")
        elif poison.get(k) == "grad":
            loss = loss + (x * float("inf")).sum() * 0.0  # finite loss, NaN gradient
        return {"fit": loss}

    return x, closure


def test_minimize_recovers_from_nan_loss_and_nan_gradient(caplog):
    target = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    x, closure = _quadratic(target, {3: "loss", 7: "grad", 8: "loss"})
    history = minimize({"x": (x, 0.5)}, closure, OptimConfig(steps=300, rampdown=0.3))
    assert len(history) == 300  # every step counted once, the failed ones retried
    assert all(np.isfinite(step["total"]).all() for step in history)
    torch.testing.assert_close(x.detach(), target, atol=0.02, rtol=0)
    assert sum("restoring the last good state" in r.getMessage() for r in caplog.records) == 3


def test_minimize_restores_the_last_good_state_on_infinite_parameters():
    x = torch.zeros(1, 2, requires_grad=True)
    seen = []

    def closure():
        seen.append(x.detach().clone())
        return {"fit": (x - 1.0).square().sum(1)}

    def explode(step, record):  # after step 2 a parameter becomes infinite, as after a huge gradient
        if step == 2:
            with torch.no_grad():
                x[0, 0] = float("inf")

    history = minimize({"x": (x, 0.1)}, closure, OptimConfig(steps=60, rampdown=0.0), on_step=explode)
    assert len(history) == 60 and len(seen) == 61  # one evaluation saw the infinite value and was retried
    assert [bool(torch.isinf(s).any()) for s in seen].count(True) == 1
    assert torch.equal(seen[4], seen[2])  # restored to the state before step 2's update, not the broken one
    torch.testing.assert_close(x.detach(), torch.ones(1, 2), atol=0.05, rtol=0)


def test_minimize_gives_up_with_a_clear_reason():
    target = torch.ones(1, 3)
    x, closure = _quadratic(target, {k: "loss" for k in range(100)})
    with pytest.raises(OptimizationError, match=r"loss or parameters became NaN/Inf 6 times at step 0; giving up"):
        minimize({"x": (x, 0.1)}, closure, OptimConfig(steps=10, max_recoveries=5))
    assert torch.equal(x.detach(), torch.zeros(1, 3))  # left at the last good state


# ----------------------------------------------------------------------------- end to end


def test_nan_during_fitting_recovers_or_fails_that_face(photo_dir, small_models, tmp_path, monkeypatch, capsys):
    """First face: the loss is always NaN (it fails with the reason); second: NaN twice (it recovers)."""
    monkeypatch.setattr(fitting.shape, "minimize", _nan_injecting(minimize, [ALWAYS, {1, 2}]))
    out = tmp_path / "out"
    assert main(run_args(photo_dir, out, small_models, "--stages", "1")) == 1
    failed, recovered = (Path(p).stem for p in PHOTOS)
    reasons = read_failures(out / "failures.tsv")
    assert list(reasons) == [failed]
    assert re.fullmatch(r"loss or parameters became NaN/Inf 6 times at step 0; giving up on this face", reasons[failed])
    assert not (out / failed / "metrics.json").exists()
    metrics = json.loads((out / recovered / "metrics.json").read_text())
    assert np.isfinite(metrics["stage1_psnr"]) and metrics["landmark_residual"] < 0.1
    assert "non-finite loss or parameters at step 1" in (out / recovered / "log.txt").read_text()
    err = capsys.readouterr().err
    no_traceback(err)
    assert re.search(rf"^ERROR uvapm.run: {failed}: loss or parameters became NaN/Inf", err, re.M)
    assert_outputs_complete(out)


@pytest.mark.slow
def test_full_disk_while_writing_one_face(photo_dir, small_models, tmp_path, monkeypatch, capsys):
    """ENOSPC when one face's coeffs.pt is renamed into place: that face fails, the other completes; the rerun
    (disk freed) completes it and skips the other."""
    first, second = (Path(p).stem for p in PHOTOS)
    replace = os.replace

    def full_disk(src, dst, *args, **kwargs):
        if Path(dst).name == "coeffs.pt" and Path(dst).parent.name == first:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return replace(src, dst, *args, **kwargs)

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", full_disk)
        assert main(run_args(photo_dir, out, small_models, "--stages", "1")) == 1
    reasons = read_failures(out / "failures.tsv")
    assert reasons == {first: f"cannot write output ({out / first / 'coeffs.pt'}: No space left on device)"}
    assert not (out / first / "metrics.json").exists() and (out / second / "metrics.json").is_file()
    no_traceback(capsys.readouterr().err)
    assert_outputs_complete(out)

    done = (out / second / "metrics.json").stat().st_mtime_ns
    assert main(run_args(photo_dir, out, small_models, "--stages", "1")) == 0
    assert (out / second / "metrics.json").stat().st_mtime_ns == done
    assert (out / first / "metrics.json").is_file() and read_failures(out / "failures.tsv") == {}
    assert_outputs_complete(out)


def test_a_batch_of_bad_files_odd_names_and_a_corrupt_processed_file(small_models, tmp_path, faces_dir, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    odd = b"caf\xe9 " + b"l" * 246 + b".jpg"  # not UTF-8 (Latin-1), and 255 bytes: the longest name allowed
    with open(os.path.join(os.fsencode(photos), odd), "wb") as fh:
        fh.write((faces_dir / "single" / PHOTOS[0]).read_bytes())
    (photos / "zero.jpg").write_bytes(b"")
    (photos / "notes.jpg").write_text("not a photo")
    (photos / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    write_image(photos / "stale.png", np.zeros((8, 8, 3), np.uint8))
    out = tmp_path / "out"
    (out / "processed_data").mkdir(parents=True)
    (out / "processed_data" / "stale.pt").write_bytes(b"PK\x03\x04 cut short")  # from a run that predates atomic writes
    arcface = tmp_path / "checkpoints" / "arcface_model" / "ms1mv3_arcface_r50_fp16_backbone.pth"
    arcface.parent.mkdir(parents=True)
    arcface.write_bytes(b"PK\x03\x04" + bytes(100))  # an optional network's checkpoint, broken: used without it

    assert main(run_args(photos, out, small_models, "--stages", "1", "--checkpoints_dir",
                         str(tmp_path / "checkpoints"))) == 1
    err = capsys.readouterr().err
    no_traceback(err)
    reasons = read_failures(out / "failures.tsv")
    assert reasons == {
        "zero.jpg": "preprocess: empty file (0 bytes)",
        "notes.jpg": "preprocess: not a recognised image format",
        "gone.jpg": "preprocess: broken symbolic link",
        "stale": reasons["stale"],
    }
    assert re.fullmatch(r"corrupt or truncated checkpoint \(.+\) \(rerun with --overwrite to preprocess it again\)",
                        reasons["stale"])
    assert len([line for line in err.splitlines() if line.startswith("ERROR")]) == 4
    (face,) = [p.name for p in out.iterdir() if (p / "metrics.json").is_file()]
    assert os.fsencode(face).startswith(b"caf\xe9 lll") and len(os.fsencode(face)) == 200
    assert re.fullmatch(r"caf\udce9 l+~[0-9a-f]{10}", face)
    metrics = json.loads((out / face / "metrics.json").read_text())
    assert metrics["source"] == os.fsdecode(os.path.join(os.fsencode(photos), odd))
    assert metrics["networks"]["arcface"].startswith(f"skipped: {arcface}: corrupt or truncated checkpoint")
    assert (out / "index.html").read_bytes().decode("utf-8").count('class="failed"') == 4
    (out / "processed_data" / "stale.pt").unlink()  # the corrupt file planted above, not an output of the run
    assert assert_outputs_complete(out) >= 10  # the face's pictures, coefficients and metrics, its crop
    assert not (out / ".uvapm.lock").exists()


def test_empty_input_folder_is_a_usage_error(tmp_path, small_models, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    assert main(run_args(tmp_path / "empty", tmp_path / "out", small_models)) == 2
    assert re.search(r"^error: .*empty: no images in the input folder \(\.jpg", capsys.readouterr().err, re.M)
    assert not (tmp_path / "out").exists()
