"""Self-contained ``report.html``: findings table, generated report, key slices, evidence overlays.

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
.siteflag{color:#a40;font-weight:bold}.noevidence{color:#555}
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


def _explanations(result: Any) -> list[Any]:
    """Explanations of the positive findings shown on the page (computed once per result)."""
    if result.image is None or getattr(result, "_explainer", None) is None:
        return []
    return result.explain_positives(MAX_CAM_FINDINGS)


def key_slice_panels(result: Any) -> list[str]:
    """Axial and coronal slices through the evidence peak of the most probable positive finding
    whose evidence localises, else through the volume centre (never an arbitrary index 0)."""
    if result.image is None:
        return []
    arr = result.image
    sx, sy, sz = (float(s) for s in result.preprocessed.get("spacing", (1.0, 1.0, 1.0)))
    peaks = [(e.finding, e.peak_index()) for e in _explanations(result) if e.localised and e.peak_index()]
    if peaks:
        where, (_, cj, ck) = f"evidence peak of {peaks[0][0]}", peaks[0][1]
    else:
        where, (_, cj, ck) = "volume centre", (s // 2 for s in arr.shape)
    return [
        _figure(_png(_axial(arr, ck), sy / sx), f"axial slice {ck} ({where})"),
        _figure(_png(_coronal(arr, cj), sz / sx), f"coronal slice {cj} ({where})"),
    ]


def gradcam_panels(result: Any) -> list[str]:
    """Evidence overlays (axial + coronal through the peak) for positive findings; a finding whose
    map localises nothing gets a sentence saying so instead of a drawing (an empty or flat map is
    no evidence), and a finding whose evidence lies outside its anatomical site is flagged."""
    arr = result.image
    panels = []
    for exp in _explanations(result):
        sx, sy, sz = (float(s) for s in result.preprocessed.get("spacing", (1.0, 1.0, 1.0)))
        label = f"{exp.finding} (p={exp.probability:.2f}, {exp.method})"
        if not exp.localised:
            why = exp.localisation.reason if exp.localisation is not None else ""
            panels.append(f'<p class="noevidence"><b>{html.escape(exp.finding)}</b>: no localised evidence '
                          f'({html.escape(exp.method)}: {html.escape(why)}); nothing is drawn.</p>')
            continue
        heat = np.asarray(exp.heatmap.array)
        _, pj, pk = exp.peak_index()
        figs = (_figure(_png(_axial(arr, pk), sy / sx, _axial(heat, pk)), f"evidence axial {pk}: {label}")
                + _figure(_png(_coronal(arr, pj), sz / sx, _coronal(heat, pj)), f"evidence coronal {pj}: {label}"))
        flag = (exp.site_check or {}).get("flag")
        site = _site_line(exp.site_check)
        note = (f'<p class="siteflag">&#9888; {html.escape(flag)}</p>' if flag
                else f'<p class="note">{html.escape(site)}</p>' if site else "")
        panels.append(f'<div class="evidence"><div class="imgs">{figs}</div>{note}</div>')
    return panels


def _site_line(check: dict | None) -> str:
    """'62% of the evidence inside the pleural space' (empty when unknown)."""
    if not check or check.get("fraction_in_site") is None:
        return ""
    return f"{check['fraction_in_site']:.0%} of the evidence inside the {str(check.get('site')).lower()}"


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
    cam_html = "".join(cams) if cams else "<p>No positive findings; no evidence overlays.</p>"
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
<h2>Evidence for positive findings</h2>
<p class="note">Heatmaps show where the image drives each finding's output; a map that points
nowhere (all zero or flat) is reported as "no localised evidence" and not drawn. The anatomical-site
check uses a coarse anatomy map computed from the CT's Hounsfield units.</p>
{cam_html}
</body></html>
"""


def write_html(result: Any, path: str | Path) -> Path:
    """Write :func:`render_html` atomically to ``path``."""
    return atomic_write_text(path, render_html(result))
