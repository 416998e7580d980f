"""``index.html``: a gallery of every face (or person fitted from several photos) of a run that opens from disk."""

from __future__ import annotations

import html
import json
from pathlib import Path

from utils.atomic import write_text
from utils.cli import count

__all__ = ["write_gallery"]

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; font-size: 13px; }
img.summary { height: 110px; } img.uv { height: 110px; } img.photo { height: 80px; margin-right: 2px; }
.failed { background: #fde8e8; }
"""

_COLUMNS = ("last stage", "PSNR (dB)", "SSIM", "high-freq PSNR 512", "landmark residual", "reliable share",
            "photo skin ITA", "albedo skin ITA", "albedo skin L*")


def _numbers(metrics: dict) -> list:
    """The last stage's re-render numbers, the landmark residual and the skin tones of photo and albedo."""
    stage = next((s for s in ("stage3", "stage2", "stage1") if f"{s}_psnr" in metrics), "")
    return [stage.replace("stage", "stage "), metrics.get(f"{stage}_psnr"), metrics.get(f"{stage}_ssim"),
            metrics.get(f"{stage}_high_freq_psnr_512"), metrics.get("landmark_residual"),
            metrics.get("reliable_share"), metrics.get("photo_skin_ita_deg"), metrics.get("albedo_skin_ita_deg"),
            metrics.get("albedo_skin_L")]


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
            f"<td>{value:.4g}</td>" if isinstance(value, (int, float)) else f"<td>{html.escape(str(value or '-'))}</td>"
            for value in _numbers(metrics)
        )
        seconds = sum(metrics.get("seconds", {}).values())
        photos = "".join(  # a person fitted from several photos: each photo's render
            f'<a href="{link}/photos/{html.escape(p)}/summary.png"><img class="photo" '
            f'src="{link}/photos/{html.escape(p)}/render.png" title="{html.escape(p)}" loading="lazy"></a>'
            for p in metrics.get("photos", [])) or "-"
        rows.append(
            f'<tr><td><a href="{link}/">{link}</a></td>'
            f'<td><a href="{link}/summary.png"><img class="summary" src="{link}/summary.png" loading="lazy"></a></td>'
            f'<td><a href="{link}/uv_albedo.png"><img class="uv" src="{link}/uv_albedo.png" loading="lazy"></a></td>'
            f"<td>{photos}</td>{cells}<td>{seconds:.1f}</td></tr>"
        )
    header = "".join(f"<th>{label}</th>" for label in _COLUMNS)
    failed = "".join(
        f'<tr class="failed"><td>{html.escape(n)}</td><td>{html.escape(r)}</td></tr>' for n, r in failures
    )
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>UVAPM reconstructions</title><style>{_STYLE}</style></head>
<body>
<h1>UVAPM reconstructions</h1>
<p>{count(len(rows), 'face')} reconstructed, {len(failures)} failed. Summary panels: input | landmarks (blue detected,
red fitted) | skin mask | stage 1 | stage 2 | stage 3 | UV albedo. PSNR/SSIM are measured inside the skin mask: how
well the photo is explained, not whether the albedo is right. Landmark residual: the fit against its own detections.
Reliable share: the share of the rendered face the colour fit trusted (skin and parse masks, occluders
rejected); low values mean glasses, hair, hands or shadows covered the face.
Skin ITA (individual typology angle, degrees; above 55 very light, below -30 dark) and L* of the photo's skin pixels
and of the albedo's seen texels: an albedo tone that follows the scene's light instead of the skin shows here.</p>
<table><tr><th>face</th><th>summary</th><th>UV albedo</th><th>photos (a person fitted jointly)</th>{header}
<th>seconds</th></tr>
{''.join(rows)}
</table>
<h2>Failures</h2>
<table><tr><th>file</th><th>reason</th></tr>{failed or '<tr><td colspan="2">none</td></tr>'}</table>
</body></html>
"""
    write_text(output_dir / "index.html", page)
