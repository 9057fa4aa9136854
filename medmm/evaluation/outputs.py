"""Writing an evaluation to disk: metrics.json, per_finding.csv, PNG plots, summary.html.

Every file is written atomically (temp file in the same folder, then ``os.replace``) so a crash or
a full disk never leaves a half-written result; ``metrics.json`` is written last and marks a
finished evaluation. Disk problems become one-line :class:`MedmmInputError` messages naming the
folder. Nothing written here contains patient identifiers: scans are counted, never listed.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from medmm.errors import MedmmInputError
from medmm.io.writers import atomic_write_bytes

CSV_COLUMNS = (
    "finding", "n_known", "n_positive", "prevalence", "auroc", "ci_low", "ci_high", "n_skipped",
    "auprc", "threshold", "sensitivity", "specificity", "precision", "f1", "ece",
)


def check_writable(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and prove a file can be written there, before any long computation.

    Raises:
        MedmmInputError: the folder cannot be created or written (exists as a file, read-only,
            disk full, ...).
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".medmm-write-test.", dir=out)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise MedmmInputError(out, f"cannot write evaluation results here ({_reason(err)}); pass a writable --out") from None
    return out


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


def _write(out: Path, name: str, data: bytes) -> Path:
    try:
        return atomic_write_bytes(out / name, data)
    except OSError as err:
        raise MedmmInputError(out / name, f"cannot write ({_reason(err)}); nothing partial was left") from None


def to_json(value: Any) -> str:
    """Strict JSON (NaN/inf become null) with sorted keys for reproducible files."""
    return json.dumps(_clean(value), indent=2, sort_keys=True, allow_nan=False) + "\n"


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def per_finding_csv(rows: list[dict[str, Any]]) -> bytes:
    """The per-finding table as CSV bytes (columns :data:`CSV_COLUMNS`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue().encode()


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return v


def terminal_table(metrics: dict[str, Any]) -> str:
    """Human-readable summary: one line per finding plus macro and calibration/consistency."""
    cls = metrics["classification"]
    head = f"{'finding':<36} {'n+':>4} {'AUROC':>6} {'95% CI':>13} {'AUPRC':>6} {'sens':>5} {'spec':>5} {'F1':>5}"
    lines = [head, "-" * len(head)]

    def f(v: Any, w: int = 5) -> str:
        return f"{v:>{w}.3f}" if isinstance(v, (int, float)) and math.isfinite(v) else f"{'-':>{w}}"

    for r in cls["per_finding"]:
        ci = f"[{r['ci_low']:.2f},{r['ci_high']:.2f}]" if math.isfinite(r["ci_low"]) else "-"
        lines.append(
            f"{r['finding'][:36]:<36} {r['n_positive']:>4} {f(r['auroc'], 6)} {ci:>13} {f(r['auprc'], 6)} "
            f"{f(r['sensitivity'])} {f(r['specificity'])} {f(r['f1'])}"
        )
    m = cls["macro"]
    ci = f"[{m['ci_low']:.2f},{m['ci_high']:.2f}]" if math.isfinite(m["ci_low"]) else "-"
    lines.append("-" * len(head))
    lines.append(
        f"{'macro (' + str(m['n_findings']) + ' findings)':<36} {'':>4} {f(m['auroc'], 6)} {ci:>13} "
        f"{f(m['auprc'], 6)} {f(m['sensitivity'])} {f(m['specificity'])} {f(m['f1'])}"
    )
    cal = metrics["calibration"]["pooled"]
    con = metrics["consistency"]
    lines.append(
        f"scans {metrics['n_scans']} | ECE {f(cal['ece'])} | violation rate raw {f(con['violation_rate_raw'])}"
        f" -> consistent {f(con['violation_rate_consistent'])}"
    )
    rep = metrics.get("report_generation") or {}
    if rep.get("n_reports"):
        meteor_key = "meteor" if "meteor" in rep else "meteor_exact_stem"
        ce = rep.get("clinical_efficacy")
        ce_f1 = (ce.get("f1", (ce.get("micro") or {}).get("f1")) if isinstance(ce, dict) else ce)
        lines.append(
            f"reports {rep['n_reports']} | BLEU-4 {f(rep['bleu4'])} | ROUGE-L {f(rep['rouge_l'])} | "
            f"{meteor_key} {f(rep[meteor_key])} | clinical-efficacy F1 (micro) {f(ce_f1)}"
            + (f" (decisions' own micro F1 {f(rep['classifier_f1']['micro'])}: the ceiling)" if rep.get("classifier_f1") else "")
        )
    if rep.get("n_generated"):
        lines.append(
            f"generated reports {rep['n_generated']} | agreement with decisions {f(rep.get('agreement'))} | "
            f"truncated {f(rep['truncated'])} | distinct-4 {f(rep['distinct_4'])} | mean tokens {rep['mean_tokens']:.1f}"
        )
    if metrics.get("robustness"):
        from medmm.evaluation.robustness import format_table

        lines.append("")
        lines.append(format_table(metrics["robustness"]))
    return "\n".join(lines)


def summary_html(metrics: dict[str, Any], images: list[str]) -> str:
    """Self-contained-enough HTML summary (tables + links to the PNGs next to it)."""
    esc = html.escape
    table = esc(terminal_table(metrics))
    protocol = "".join(f"<li><b>{esc(k)}</b>: {esc(str(v))}</li>" for k, v in metrics["protocol"].items())
    figs = "".join(f'<figure><img src="{esc(name)}" alt="{esc(name)}" style="max-width:100%"></figure>' for name in images)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>medmm evaluation</title></head><body>"
        f"<h1>medmm evaluation: {esc(str(metrics['model'].get('id', '')))}</h1>"
        f"<p>{metrics['n_scans']} scans, split <code>{esc(str(metrics['split']))}</code></p>"
        f"<h2>Metrics</h2><pre>{table}</pre><h2>Protocol</h2><ul>{protocol}</ul>{figs}</body></html>\n"
    )


def write_evaluation(out_dir: str | Path, metrics: dict[str, Any], figures: dict[str, bytes]) -> dict[str, Path]:
    """Write figures, per_finding.csv, summary.html and (last) metrics.json into ``out_dir``.

    Returns:
        file kind -> path written.

    Raises:
        MedmmInputError: the folder or a file cannot be written.
    """
    out = check_writable(out_dir)
    written: dict[str, Path] = {}
    for name, data in figures.items():
        written[name] = _write(out, name, data)
    written["per_finding.csv"] = _write(out, "per_finding.csv", per_finding_csv(metrics["per_finding"]))
    written["summary.html"] = _write(out, "summary.html", summary_html(metrics, list(figures)).encode())
    written["metrics.json"] = _write(out, "metrics.json", to_json(metrics).encode())
    return written
