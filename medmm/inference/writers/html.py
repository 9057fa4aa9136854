"""Self-contained ``report.html``: findings table, generated report, key slices, Grad-CAM overlays.

Images are matplotlib PNGs embedded as ``data:image/png;base64`` URIs and the CSS is inline, so
the page opens offline with no external assets. Slices are shown in radiological convention
(patient right on the viewer's left, anterior/superior up) from the preprocessed RAS volume.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from medmm.inference.result import findings_table_html
from medmm.inference.writers.notes import html_block
from medmm.io.writers import atomic_write_text

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table.medmm-findings{border-collapse:collapse;font-size:0.9em}
table.medmm-findings td,table.medmm-findings th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.imgs{display:flex;flex-wrap:wrap;gap:12px}.imgs figure{margin:0}
figcaption{font-size:0.85em;color:#555}
.note{font-size:0.8em;color:#777}
"""

# Keep the page small: at most this many Grad-CAM panels (highest probability first).
MAX_CAM_FINDINGS = 8


def _axial(arr: np.ndarray, k: int) -> np.ndarray:
    # RAS array (i→R, j→A): rows = j flipped (anterior up), cols = i flipped (patient right on left)
    return arr[:, :, k].T[::-1, ::-1]


def _coronal(arr: np.ndarray, j: int) -> np.ndarray:
    # rows = k flipped (superior up), cols = i flipped
    return arr[:, j, :].T[::-1, ::-1]


def _png(image: np.ndarray, aspect: float, overlay: np.ndarray | None = None, title: str = "") -> str:
    """One panel as a base64 PNG data URI."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2, 3.2), dpi=80)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(image, cmap="gray", aspect=aspect, interpolation="nearest")
    if overlay is not None:
        ax.imshow(overlay, cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0, aspect=aspect, interpolation="bilinear")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout(pad=0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(uri: str, caption: str) -> str:
    return f'<figure><img src="{uri}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def key_slice_panels(result: Any) -> list[str]:
    """Axial and coronal slices through the volume centre as ``<figure>`` HTML snippets."""
    if result.image is None:
        return []
    arr = result.image
    sx, sy, sz = (float(s) for s in result.preprocessed.get("spacing", (1.0, 1.0, 1.0)))
    ci, cj, ck = (s // 2 for s in arr.shape)
    return [
        _figure(_png(_axial(arr, ck), sy / sx), f"axial slice {ck}"),
        _figure(_png(_coronal(arr, cj), sz / sx), f"coronal slice {cj}"),
    ]


def gradcam_panels(result: Any) -> list[str]:
    """Grad-CAM overlays (axial + coronal through the heatmap peak) for positive findings."""
    if result.image is None or result._explainer is None:
        return []
    arr = result.image
    sx, sy, sz = (float(s) for s in result.preprocessed.get("spacing", (1.0, 1.0, 1.0)))
    positives = sorted((r for r in result.findings if r["positive"]), key=lambda r: -r["probability"])
    panels = []
    for row in positives[:MAX_CAM_FINDINGS]:
        heat = np.asarray(result._explainer.heatmap(row["finding"]).array)
        _, pj, pk = np.unravel_index(int(np.argmax(heat)), heat.shape)
        label = f"{row['finding']} (p={row['probability']:.2f})"
        panels.append(_figure(_png(_axial(arr, pk), sy / sx, _axial(heat, pk)), f"Grad-CAM axial: {label}"))
        panels.append(_figure(_png(_coronal(arr, pj), sz / sx, _coronal(heat, pj)), f"Grad-CAM coronal: {label}"))
    return panels


def report_html(result: Any) -> str:
    """The report (paragraph per section) and what the verifier repaired to make it agree with the findings table."""
    paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in str(result.report).split("\n\n"))
    check = getattr(result, "report_check", None) or {}
    repairs = check.get("repairs") or []
    if not check:
        return paragraphs
    state = ("agrees with the findings table" if check.get("agrees")
             else "DISAGREES with the findings table on " + ", ".join(check.get("disagreements") or []))
    note = (f'<p class="note">Verified by the report labeler: {html.escape(state)}; '
            f"{len(repairs)} sentence repair(s).</p>")
    if not repairs:
        return paragraphs + note
    rows = "".join(
        f"<tr><td>{html.escape(str(r.get('section')))}</td><td>{html.escape(str(r.get('action')))}</td>"
        f"<td>{html.escape(str(r.get('finding') or ''))}</td><td>{html.escape(str(r.get('reason')))}</td>"
        f"<td>{html.escape(str(r.get('before') or ''))}</td><td>{html.escape(str(r.get('after') or ''))}</td></tr>"
        for r in repairs)
    head = "".join(f"<th>{h}</th>" for h in ("section", "repair", "finding", "why", "sentence before", "sentence after"))
    return paragraphs + note + f'<table class="medmm-repairs"><tr>{head}</tr>{rows}</table>'


def render_html(result: Any) -> str:
    """The complete page as a string."""
    model = result.model
    geo = result.input
    title = "medmm report"
    cams = gradcam_panels(result)
    cam_html = (
        f'<div class="imgs">{"".join(cams)}</div>'
        if cams
        else "<p>No positive findings; no Grad-CAM overlays.</p>"
    )
    indication = (
        f"<p><b>Indication:</b> {html.escape(result.indication)}</p>" if result.indication else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{_CSS}</style></head>
<body>
<h1>{title}</h1>
<p class="note">Research use only; not a medical device. Model {html.escape(str(model.get("id")))},
input {html.escape(str(geo.get("shape")))} voxels at {html.escape(str(geo.get("spacing")))} mm
({html.escape(str(geo.get("orientation")))}).</p>
{html_block(result)}
{indication}
<h2>Generated report</h2>
{report_html(result)}
<h2>Findings</h2>
{findings_table_html(result)}
<p class="note">p (raw): classifier output; p (consistent): after the ontology consistency step
({result.consistency.get("n_repairs", 0)} constraint repairs).</p>
<h2>Key slices</h2>
<div class="imgs">{"".join(key_slice_panels(result))}</div>
<h2>Grad-CAM for positive findings</h2>
{cam_html}
</body></html>
"""


def write_html(result: Any, path: str | Path) -> Path:
    """Write :func:`render_html` atomically to ``path``."""
    return atomic_write_text(path, render_html(result))
