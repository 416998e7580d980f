"""``index.html``: a gallery of every face of a run that opens from disk."""

from __future__ import annotations

import html
import json
from pathlib import Path

from utils.atomic import write_text

__all__ = ["write_gallery"]

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; font-size: 13px; }
img.summary { height: 110px; } img.uv { height: 110px; }
.failed { background: #fde8e8; }
"""

_COLUMNS = (("stage3_psnr", "PSNR s3"), ("stage2_psnr", "PSNR s2"), ("stage3_ssim", "SSIM s3"),
            ("stage2_ssim", "SSIM s2"), ("landmark_error", "landmark err"))


def write_gallery(output_dir: Path, names: list[str], failures: list[tuple[str, str]]) -> None:
    """Write ``output_dir/index.html`` for the completed faces ``names`` and the failures."""
    rows = []
    for name in names:
        folder = output_dir / name
        try:
            metrics = json.loads((folder / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        link = html.escape(name)
        cells = "".join(
            f"<td>{metrics[key]:.4g}</td>" if isinstance(metrics.get(key), (int, float)) else "<td>-</td>"
            for key, _ in _COLUMNS
        )
        seconds = sum(metrics.get("seconds", {}).values())
        rows.append(
            f'<tr><td><a href="{link}/">{link}</a></td>'
            f'<td><a href="{link}/summary.png"><img class="summary" src="{link}/summary.png" loading="lazy"></a></td>'
            f'<td><a href="{link}/uv_albedo.png"><img class="uv" src="{link}/uv_albedo.png" loading="lazy"></a></td>'
            f"{cells}<td>{seconds:.1f}</td></tr>"
        )
    header = "".join(f"<th>{label}</th>" for _, label in _COLUMNS)
    failed = "".join(
        f'<tr class="failed"><td>{html.escape(n)}</td><td>{html.escape(r)}</td></tr>' for n, r in failures
    )
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>UVAPM reconstructions</title><style>{_STYLE}</style></head>
<body>
<h1>UVAPM reconstructions</h1>
<p>{len(rows)} faces reconstructed, {len(failures)} failed. Summary panels: input | landmarks (blue detected,
red fitted) | skin mask | stage 1 | stage 2 | stage 3 | UV albedo. PSNR/SSIM are measured inside the skin mask.</p>
<table><tr><th>face</th><th>summary</th><th>UV albedo</th>{header}<th>seconds</th></tr>
{''.join(rows)}
</table>
<h2>Failures</h2>
<table><tr><th>file</th><th>reason</th></tr>{failed or '<tr><td colspan="2">none</td></tr>'}</table>
</body></html>
"""
    write_text(output_dir / "index.html", page)
