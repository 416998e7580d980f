"""Shared helpers of the benchmarks: machine description and table output.

Every benchmark prints its table and writes it as JSON and Markdown to
``benchmarks/results/<name>.{json,md}`` with the commit, date and machine.
Benchmarks are modules: run them from the repository root as
``python -m benchmarks.<name>`` (or all with ``python -m benchmarks``).
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from utils.atomic import write_json, write_text
from utils.cli import run_main, setup_logging

REPO = Path(__file__).resolve().parents[1]

RESULTS = REPO / "benchmarks" / "results"
SHARED = Path(os.environ.get("UVAPM_SHARED", REPO.parent / "shared"))

__all__ = ["REPO", "RESULTS", "SHARED", "machine", "peak_rss_mb", "format_table", "report"]


def machine() -> dict:
    """Commit, date and hardware of this run."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip():
            commit += "+dirty"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    return {
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} cores ({cpu})",
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of ``rows`` (floats with 4 significant digits)."""

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def report(name: str, title: str, rows: list[dict], columns: list[str], command: str, notes: str = "",
           results_dir: Path | None = None) -> str:
    """Print the table and write ``<results_dir>/<name>.json`` and ``.md``; returns the Markdown.

    ``results_dir`` defaults to :data:`RESULTS` (``benchmarks/results``).
    """
    results_dir = results_dir or RESULTS
    meta = machine()
    table = format_table(rows, columns)
    md = (
        f"### {title}\n\n`{command}` — commit {meta['commit']}, {meta['date']}, CPU {meta['cpu']}, "
        f"GPU {meta['gpu']}, torch {meta['torch']}\n\n{table}\n"
    )
    if notes:
        md += f"\n{notes}\n"
    print(md)
    write_json(results_dir / f"{name}.json", {"title": title, "command": command, "machine": meta, "rows": rows,
                                          "notes": notes})
    write_text(results_dir / f"{name}.md", md)
    return md




def write_csv(name: str, records: list[dict], fields: Sequence[str]) -> None:
    """Write the per-item ``records`` to ``benchmarks/results/<name>.csv`` (missing values left empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), restval="")
    writer.writeheader()
    writer.writerows(records)
    write_text(RESULTS / f"{name}.csv", buffer.getvalue())


def benchmark_main(argv: Sequence[str] | None, parse_args: Callable, run: Callable) -> int:
    """A benchmark's ``main``: parse ``argv``, set up logging, ``run(args, argv)`` with the CLI's error handling."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    def benchmark() -> int:
        run(args, argv)
        return 0

    return run_main(benchmark, args.verbose)
