"""The outcome of diagnosing one scan: findings, generated report, provenance and explanations.

A :class:`Result` is what :meth:`medmm.inference.Predictor.predict` returns and what every writer
(JSON, HTML, DICOM SR, FHIR) reads. It holds no PHI: geometry, de-identified acquisition facts,
the model's identity and the model's outputs only. ``to_json()`` follows the schema documented in
``docs/inference.md`` (``schema: "medmm.result/1"``).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RESULT_SCHEMA = "medmm.result/1"

# Columns of the findings table, in order (also the keys of each ``Result.findings`` entry).
FINDING_COLUMNS = (
    "finding",
    "probability_raw",
    "probability",
    "threshold",
    "positive",
    "codes",
    "ontology_path",
    "repaired",
    "reliable",
)


@dataclass
class Explanation:
    """Evidence for one finding: a heatmap, whether it localises anything, and where.

    Attributes:
        finding: the finding's name.
        heatmap: :class:`medmm.io.Volume` in the model's (preprocessed) space, values in [0, 1].
        probability: the consistent probability of the finding.
        ontology_path: finding → ... → root, from the ontology.
        details: the knowledge module's explanation (``explain_finding``): constraints involved
            and repairs made.
        method: the evidence method that produced ``heatmap`` (``medmm.inference.evidence``).
        localisation: :class:`~medmm.inference.evidence.Localisation` of the map (None: not checked).
        site_check: evidence mass inside the finding's anatomical site (``medmm.inference.anatomy``),
            or None when no anatomy map was made.
    """

    finding: str
    heatmap: Any
    probability: float
    ontology_path: list[str]
    details: dict[str, Any] = field(default_factory=dict)
    method: str = "gradcam"
    localisation: Any = None
    site_check: dict[str, Any] | None = None

    @property
    def localised(self) -> bool:
        """Whether the heatmap points somewhere (False: "no localised evidence"; never draw it)."""
        return self.localisation is None or bool(self.localisation.localised)

    def peak_index(self) -> tuple[int, int, int] | None:
        """Voxel index (i, j, k) of the evidence peak, e.g. to choose key slices; None when the
        map localises nothing (an all-zero or flat map has no peak worth showing)."""
        if self.localisation is not None:
            return self.localisation.peak
        arr = np.asarray(self.heatmap.array)
        return tuple(int(v) for v in np.unravel_index(int(np.argmax(arr)), arr.shape))

    def summary(self) -> dict[str, Any]:
        """JSON-ready evidence facts (no image data): method, localisation, site check."""
        loc = self.localisation.to_dict() if self.localisation is not None else None
        text = "localised evidence" if self.localised else "no localised evidence"
        if self.site_check and self.site_check.get("flag"):
            text = str(self.site_check["flag"])
        return {"finding": self.finding, "method": self.method, "localised": self.localised,
                "statement": text, "localisation": loc, "site_check": self.site_check}


@dataclass
class Result:
    """Findings and report for one scan (see module docstring).

    Attributes:
        findings: one dict per label with keys :data:`FINDING_COLUMNS`.
        report: the generated free-text report.
        indication: the clinical indication given by the user (None when not given).
        model: identity of the model (``id``, ``run``, ``checkpoint``, ``ontology_sha256``, ...).
        input: geometry and de-identified acquisition facts of the input volume.
        preprocessed: shape/spacing the model saw.
        inference: how the image was processed (sliding window or not, device, seconds).
        consistency: summary of the ontology consistency step.
        image: preprocessed image ``[X, Y, Z]`` numpy array in [model] space (for plots).
        image_affine: 4x4 affine of ``image`` (voxel -> RAS mm).
        source_files: DICOM files of the input series (for writers that reference them; never
            serialised).
        warnings: why the input is doubtful (plausibility gate, ``inference/plausibility.py``);
            shown in every output format and on stderr.
        groups: ontology group outputs of a model with ``network.hierarchy`` (``group``,
            ``probability``, ``findings``); empty otherwise.
        evidence: per explained positive finding, the evidence method, whether the map localises
            anything and its anatomical-site check (:meth:`explain_positives`); None until computed.
    """

    findings: list[dict[str, Any]]
    report: str
    indication: str | None
    model: dict[str, Any]
    input: dict[str, Any]
    preprocessed: dict[str, Any]
    inference: dict[str, Any]
    consistency: dict[str, Any]
    report_check: dict[str, Any] = field(default_factory=dict)
    image: np.ndarray | None = field(default=None, repr=False)
    image_affine: np.ndarray | None = field(default=None, repr=False)
    source_files: list[Any] = field(default_factory=list, repr=False)
    warnings: list[str] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)  # issue 20: ontology group outputs (hierarchy)
    evidence: list[dict[str, Any]] | None = None
    _explainer: Callable[[str], Explanation] | None = field(default=None, repr=False)
    _explanations: dict[str, Explanation] = field(default_factory=dict, repr=False)

    # ----------------------------------------------------------------- tables
    @property
    def labels(self) -> list[str]:
        """Finding names in model order."""
        return [f["finding"] for f in self.findings]

    @property
    def positives(self) -> list[str]:
        """Findings whose consistent probability reaches their threshold."""
        return [f["finding"] for f in self.findings if f["positive"]]

    def finding(self, name: str) -> dict[str, Any]:
        """The findings row for ``name``.

        Raises:
            KeyError: unknown finding (message lists close matches).
        """
        for row in self.findings:
            if row["finding"] == name:
                return row
        import difflib

        close = difflib.get_close_matches(name, self.labels, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown finding {name!r}{hint}")

    def to_dataframe(self):
        """Findings as a :class:`pandas.DataFrame` (one row per finding)."""
        import pandas as pd

        return pd.DataFrame(self.findings, columns=list(FINDING_COLUMNS))

    # ------------------------------------------------------------ explanations
    def explain(self, finding: str) -> Explanation:
        """Grad-CAM heatmap volume and ontology path for ``finding`` (see ``explain.py``).

        Raises:
            KeyError: unknown finding.
            RuntimeError: this result was built without the model (e.g. read back from JSON).
        """
        self.finding(finding)
        if self._explainer is None:
            raise RuntimeError("this Result has no model attached; re-run Predictor.predict to explain")
        return self._explainer(finding)

    def explain_positives(self, limit: int | None = None) -> list[Explanation]:
        """Explanations of the positive findings (highest probability first, at most ``limit``),
        computed once and summarised into :attr:`evidence` (written to ``result.json``)."""
        if self._explainer is None:
            return []
        rows = sorted((r for r in self.findings if r["positive"]), key=lambda r: -r["probability"])
        cache = self._explanations
        out = []
        for row in rows[:limit]:
            name = row["finding"]
            if name not in cache:
                cache[name] = self._explainer(name)
            out.append(cache[name])
        self.evidence = [e.summary() for e in out]
        return out

    # ---------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict following ``medmm.result/1`` (no image data, no file paths, no PHI)."""
        return {
            "schema": RESULT_SCHEMA,
            "model": self.model,
            "input": self.input,
            "preprocessed": self.preprocessed,
            "inference": self.inference,
            "indication": self.indication,
            "report": self.report,
            "report_check": _jsonable(self.report_check),
            "findings": [_jsonable(row) for row in self.findings],
            "consistency": _jsonable(self.consistency),
            "warnings": [str(w) for w in self.warnings],
            **({"groups": [_jsonable(row) for row in self.groups]} if self.groups else {}),
            **({"evidence": _jsonable(self.evidence)} if self.evidence is not None else {}),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The result as a JSON string (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    # ---------------------------------------------------------------- display
    def summary(self) -> str:
        """A few plain-text lines: positive findings with probabilities, then the report."""
        lines = [f"{'finding':<36} {'prob':>6} {'thr':>5}  positive"]
        for row in self.findings:
            mark = "yes" if row["positive"] else "-"
            lines.append(f"{row['finding']:<36} {row['probability']:6.3f} {row['threshold']:5.2f}  {mark}")
        lines += ["", "Report:", self.report]
        if self.warnings:
            lines += ["", "Input warnings:", *(f"  - {w}" for w in self.warnings)]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """Findings table and report for Jupyter."""
        return findings_table_html(self) + f"<h4>Report</h4><p>{html.escape(self.report)}</p>"

    def __repr__(self) -> str:
        pos = ", ".join(self.positives) or "none"
        return f"Result(model={self.model.get('id')!r}, shape={self.input.get('shape')}, positive=[{pos}])"


def findings_table_html(result: Result) -> str:
    """An HTML table of the findings (escaped; positive rows in bold)."""
    head = "".join(
        f"<th>{h}</th>" for h in ("finding", "p (raw)", "p (consistent)", "threshold", "positive", "reliable",
                                  "ontology path")
    )
    rows = []
    for row in result.findings:
        style = ' style="font-weight:bold;background:#fde2e2"' if row["positive"] else ""
        path = " &rarr; ".join(html.escape(p) for p in row.get("ontology_path") or [])
        rows.append(
            f"<tr{style}><td>{html.escape(row['finding'])}</td><td>{row['probability_raw']:.3f}</td>"
            f"<td>{row['probability']:.3f}</td><td>{row['threshold']:.2f}</td>"
            f"<td>{'yes' if row['positive'] else 'no'}</td>{_reliability_cell(row)}<td>{path}</td></tr>"
        )
    return f'<table class="medmm-findings"><tr>{head}</tr>{"".join(rows)}</table>'


def _reliability_cell(row: dict[str, Any]) -> str:
    """'yes', or 'unreliable' with the calibration's reason as a tooltip (``medmm.models.calibration``)."""
    if row.get("reliable", True):
        return "<td>yes</td>"
    return f'<td title="{html.escape(str(row.get("unreliable_reason") or ""))}">unreliable</td>'


def _jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and tuples to plain JSON types (recursively)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return obj.tolist()
    return obj
