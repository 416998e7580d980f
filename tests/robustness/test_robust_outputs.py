"""Output folders: one run at a time (locks), read-only and full disks, large batches."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fitting.preprocess import command as preprocess
from fitting.run import main as run_main
from tests.robustness.helpers import REPO, assert_outputs_complete, no_traceback, read_failures, run_args
from utils.atomic import remove_stale_temporary_files, temporary_owner, write_text
from utils.image_io import write_image
from utils.locking import LOCK_NAME, FolderLock, FolderLockedError


def _dead_pid() -> int:
    """The id of a process that has exited (and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _tiny_images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        write_image(folder / f"tiny_{k:04d}.png", np.full((8, 8, 3), k % 256, np.uint8))


def _preprocess_args(folder: Path, out: Path) -> list[str]:
    return ["--input_dir", str(folder), "--output_dir", str(out), "--checkpoints_dir", str(out.parent / "none"), "-q"]


# ----------------------------------------------------------------------------- locks


def test_second_run_on_a_folder_in_use_is_refused(tmp_path, photo_dir, small_models, capsys):
    out = tmp_path / "out"
    with FolderLock(out, "another run"):
        assert run_main(run_args(photo_dir, out, small_models)) == 2
    err = capsys.readouterr().err
    assert re.search(rf"^error: {re.escape(str(out))}: output folder in use by another run \(process {os.getpid()} "
                     rf"on host {re.escape(socket.gethostname())}, since .+\); wait for it to finish", err, re.M)
    no_traceback(err)
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written, the lock file removed by its holder


@pytest.mark.slow
def test_two_processes_at_once(tmp_path, photo_dir):
    """A second real run on the folder exits with 2 while the first (paused with SIGSTOP to keep the timing
    deterministic) holds it; the first then completes."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fitting.preprocess", *_preprocess_args(photo_dir, out)]
    first = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / LOCK_NAME).is_file() or not (out / LOCK_NAME).stat().st_size:
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)
        second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
        first.send_signal(signal.SIGCONT)
        assert second.returncode == 2
        assert f"output folder in use by fitting.preprocess (process {first.pid} on host" in second.stderr
        no_traceback(second.stderr)
        assert first.wait(timeout=120) == 0, first.stderr.read()[-2000:]
    finally:
        first.kill()
        first.wait()
    assert len(list(out.glob("*.pt"))) == 2 and not (out / LOCK_NAME).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    holder = {"pid": _dead_pid(), "host": socket.gethostname(), "command": "fitting.run", "started": "yesterday"}
    write_text(out / LOCK_NAME, json.dumps(holder))
    (out / f".coeffs.pt.abcd1234.{holder['pid']}.part").write_bytes(b"half")  # its unfinished write
    (out / ".uvapm.png.efgh5678.1.part").write_bytes(b"being written by a live process (pid 1)")
    with FolderLock(out, "test") as lock:
        recorded = json.loads((out / LOCK_NAME).read_text())
        assert recorded["pid"] == os.getpid() and recorded["command"] == "test"
        assert lock.path == out / LOCK_NAME
    assert f"taking over the lock of fitting.run (process {holder['pid']}" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == [".uvapm.png.efgh5678.1.part"]


def test_lock_of_a_reused_process_id_is_stale(tmp_path):
    """The recorded process id now belongs to another (younger) process: its start time tells."""
    out = tmp_path / "out"
    out.mkdir()
    if not Path(f"/proc/{os.getpid()}/stat").is_file():
        pytest.skip("no /proc: process start times unknown")
    reused = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": "1"}
    write_text(out / LOCK_NAME, json.dumps(reused))
    with FolderLock(out, "test"):
        assert json.loads((out / LOCK_NAME).read_text())["process_start"] != "1"


def test_lock_of_another_host_is_not_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    write_text(out / LOCK_NAME, json.dumps({"pid": 4242, "host": "gpu-node-7", "command": "fitting.run",
                                            "job": "job-17"}))
    with pytest.raises(FolderLockedError, match=rf"process 4242 on host gpu-node-7, torchrun job job-17, .*this host "
                                                rf"cannot check whether it still runs; if it does not, delete "
                                                rf"{re.escape(str(out / LOCK_NAME))}"):
        FolderLock(out, "test").acquire()


def test_temporary_names_carry_the_writer(tmp_path):
    write_text(tmp_path / ("x" * 250), "a long name")  # the temporary name is shortened to fit
    assert (tmp_path / ("x" * 250)).read_text() == "a long name"
    assert temporary_owner(".mesh.obj.k2j3h4g5.31337.part") == 31337
    assert temporary_owner("mesh.obj") is None and temporary_owner(".mesh.part") is None
    assert remove_stale_temporary_files(tmp_path) == []


def test_torchrun_ranks_share_the_lock_and_a_busy_folder_refuses_every_rank(tmp_path):
    """Rank 0 takes the lock for the job (two ranks of one job do not refuse each other, see
    tests/test_train_detail_generator.py); while another run holds it, every rank stops with its message."""
    maps = tmp_path / "maps"
    for k in range(4):
        write_image(maps / f"m{k}.png", np.random.default_rng(k).integers(0, 256, (32, 32, 3), np.uint8))
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    with FolderLock(out, "another training"):
        run = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             str(REPO / "train_detail_generator.py"), "--dataset_path", str(maps), "--output_dir", str(out),
             "--epochs", "1", "--batch_size", "2", "--resolution", "32", "--latent_dim", "4",
             "--latent_grid", "2", "--set",
             "model.low_pass_resolution=16", "--set", "model.base_channels=4", "--set", "model.max_channels=8",
             "--num_workers", "0", "--device", "cpu", "--quiet"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode != 0
    refusals = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(refusals) == 2 and all("output folder in use by another training" in line for line in refusals)
    assert "exitcode  : 2" in run.stderr  # torchrun's own report (with its launcher's traceback) of the exit code
    assert 'train_detail_generator.py", line' not in run.stderr  # the ranks printed no traceback
    assert sorted(p.name for p in out.iterdir()) == []


# ----------------------------------------------------------------------------- read-only and full disks


def test_read_only_output_folder(tmp_path, photo_dir, small_models, monkeypatch, capsys):
    """EROFS when the run creates its lock file (root writes through permissions, so it is simulated)."""
    out = tmp_path / "out"
    open_file = os.open

    def read_only(path, *args, **kwargs):
        if Path(path).parent == out:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return open_file(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    assert run_main(run_args(photo_dir, out, small_models)) == 2
    err = capsys.readouterr().err
    assert re.search(rf"^error: {re.escape(str(out))}: cannot write to the output folder \(Read-only file system\)$",
                     err, re.M)
    no_traceback(err)


def test_full_disk_while_preprocessing(tmp_path, photo_dir, capsys, monkeypatch):
    """ENOSPC writing one image's .pt: it fails with the reason, the next image is processed."""
    replace = os.replace
    first, second = sorted(p.stem for p in photo_dir.iterdir())

    def full_disk(src, dst, *args, **kwargs):
        if Path(dst).name == f"{first}.pt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return replace(src, dst, *args, **kwargs)

    out = tmp_path / "out"
    monkeypatch.setattr(os, "replace", full_disk)
    assert preprocess.main(_preprocess_args(photo_dir, out)) == 1
    assert read_failures(out / "failures.tsv") == {
        f"{first}.jpg": f"cannot write output ({out / (first + '.pt')}: No space left on device)"}
    assert sorted(p.name for p in out.glob("*.pt")) == [f"{second}.pt"]
    assert_outputs_complete(out)
    no_traceback(capsys.readouterr().err)


def test_failure_list_cannot_be_written(tmp_path, capsys, monkeypatch):
    """The disk fills up before failures.tsv: a one-line error and exit 2, nothing half-written."""
    _tiny_images(tmp_path / "in", 3)
    replace = os.replace

    def full_disk(src, dst, *args, **kwargs):
        if Path(dst).name == "failures.tsv":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_disk)
    out = tmp_path / "out"
    assert preprocess.main(_preprocess_args(tmp_path / "in", out)) == 2
    err = capsys.readouterr().err
    assert re.search(rf"^error: {re.escape(str(out / 'failures.tsv'))}: No space left on device$", err, re.M)
    no_traceback(err)
    assert sorted(p.name for p in out.iterdir()) == []


@pytest.mark.slow
def test_real_read_only_and_full_file_systems(tmp_path, photo_dir, small_models):
    """tmpfs mounts in a private mount namespace (needs root and unshare; skipped otherwise)."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a file system in a private namespace here")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    command = " ".join([sys.executable, "-m", "fitting.run", *(f"'{a}'" for a in run_args(
        photo_dir, mnt / "out", small_models, "--stages", "1"))])
    results = {}
    for name, options in (("read-only", "ro"), ("full", "size=300k")):
        # The mount disappears with the namespace: list what is left on it from inside.
        script = (f"mount -t tmpfs -o {options} tmpfs {mnt} && {command}; code=$?; find {mnt} -name '*.part'; "
                  f"cat {mnt}/out/failures.tsv 2>/dev/null; exit $code")
        results[name] = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=REPO, capture_output=True,
                                       text=True, timeout=180)
    ro = results["read-only"]
    assert ro.returncode == 2
    assert ro.stderr.strip().splitlines()[-1] == (f"error: {mnt / 'out'}: cannot write to the output folder "
                                                 "(Read-only file system)")
    no_traceback(ro.stderr)
    full = results["full"]  # two processed crops (1.2 MB each) cannot fit: both images fail, then the run ends
    assert full.returncode == 1, full.stderr[-2000:]
    assert full.stdout.splitlines() == ["file\treason"] + [
        f"{photo}\tpreprocess: cannot write output ({mnt / 'out' / 'processed_data' / Path(photo).stem}.pt: No space "
        "left on device)" for photo in sorted(p.name for p in photo_dir.iterdir())]  # and no *.part file
    assert full.stderr.count("No space left on device") == 2
    no_traceback(full.stderr)


# ----------------------------------------------------------------------------- large batches


def test_a_thousand_images_one_of_them_bad(tmp_path, small_models, capsys):
    """999 images too small for a face fail fast; one truncated JPEG has its own reason; the run completes."""
    photos = tmp_path / "photos"
    _tiny_images(photos, 999)
    good = photos / "tiny_0000.png"
    (photos / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0" + good.read_bytes()[4:40])
    out = tmp_path / "out"
    assert run_main(run_args(photos, out, small_models)) == 1
    reasons = read_failures(out / "failures.tsv")
    assert len(reasons) == 1000
    too_small = "preprocess: image is 8x8 pixels, too small to contain a face (the smallest detectable is 20 px)"
    assert set(reasons.values()) == {too_small, reasons["truncated.jpg"]}
    assert reasons["truncated.jpg"].startswith("preprocess: corrupt or truncated image")
    assert (out / "index.html").is_file() and not list(out.rglob("*.part"))
    no_traceback(capsys.readouterr().err)
