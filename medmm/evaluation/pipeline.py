"""`evaluate`: a trained run directory scored on a manifest, with the protocol written down.

Steps: read the manifest (labels from its columns, or from reports via the ontology labeler) →
select the split → refuse scans whose patient was in the model's training split → predict every
scan with the run's :class:`~medmm.inference.Predictor` (generated report, raw and consistent
probabilities) → classification metrics with bootstrap CIs, calibration, constraint violations,
report-generation metrics → optional FGSM/PGD sweep → files in ``out``.

>>> metrics = evaluate("runs/ct_chest_demo", "data/synthetic/manifest.csv", out="eval/")  # doctest: +SKIP
>>> metrics["classification"]["macro"]["auroc"]                                          # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmm.data.case import SPLITS as CASE_SPLITS
from medmm.errors import MedmmConfigError, MedmmInputError
from medmm.evaluation.calibration import DEFAULT_BINS, calibration_metrics
from medmm.evaluation.metrics import classification_metrics, resolve_thresholds
from medmm.evaluation.robustness import DEFAULT_EPS_HU, AttackSpec, robustness_sweep

log = logging.getLogger(__name__)

SPLITS = (*CASE_SPLITS, "all")
#: ``medmm``: the metrics below; ``ctrate``: also the CT-RATE papers' (`medmm.evaluation.ctrate`).
PROTOCOLS = ("medmm", "ctrate")


def training_patient_keys(meta: Any, run_dir: str | Path) -> set[str]:
    """Pseudonymous keys of the run's training patients (`RunMeta.data`, see
    :func:`medmm.models.run_meta.hash_patient_id`).

    Raises:
        MedmmConfigError: the run stores no training patient ids, so leakage cannot be ruled out.
    """
    train = None if meta.data is None else meta.data.patient_id_sha256.get("train")
    if train is None:
        raise MedmmConfigError(
            Path(run_dir) / "medmm.json",
            "stores no training patient ids (data.patient_id_sha256.train), so evaluation cannot rule out "
            "train/test leakage; re-train with this medmm",
        )
    return set(train)


def check_no_leakage(cases: Sequence[Any], train_keys: set[str], manifest: str | Path) -> None:
    """Refuse when any evaluated scan belongs to a training patient (ids are never printed).

    Raises:
        MedmmInputError: names how many scans/patients overlap, not which.
    """
    from medmm.models.run_meta import hash_patient_id

    leaked = [c for c in cases if hash_patient_id(str(c.patient_id)) in train_keys]
    if leaked:
        n_pat = len({str(c.patient_id) for c in leaked})
        raise MedmmInputError(
            manifest,
            f"{len(leaked)} of {len(cases)} scans ({n_pat} patients) were in the model's training split; "
            "evaluating on them would overstate performance - remove them or pick another split",
        )


def select_split(cases: Sequence[Any], split: str, manifest: str | Path) -> list[Any]:
    """Rows of one split (``all`` keeps every row, e.g. external sets without a split column)."""
    if split not in SPLITS:
        raise MedmmInputError(manifest, f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    chosen = list(cases) if split == "all" else [c for c in cases if c.split == split]
    if not chosen:
        raise MedmmInputError(manifest, f"no rows with split {split!r}; use --split all for a set without splits")
    return chosen


def label_matrix(cases: Sequence[Any], labels: Sequence[str]) -> np.ndarray:
    """``[N, L]`` labels in the model's order; a label a case lacks is -1 (unknown)."""
    return np.array([[int((c.labels or {}).get(name, -1)) for name in labels] for c in cases], dtype=np.int64)


def _predict_all(predictor: Any, cases: Sequence[Any]) -> dict[str, Any]:
    """Preprocessed images, raw/consistent probabilities, reports and fusion texts of every case."""
    images, raw, cons, reports, texts = [], [], [], [], []
    for case in cases:
        x = predictor.preprocess(case.image)
        x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
        pred = predictor.predict_tensor(x[None].float(), [case.indication])
        images.append(x.detach().cpu().float())
        raw.append(pred.probs_raw[0].double().numpy())
        cons.append(pred.probs[0].double().numpy())
        reports.append(pred.reports[0])
        texts.append(pred.texts[0])
    return {"images": images, "raw": np.stack(raw), "consistent": np.stack(cons), "reports": reports, "texts": texts}


def _consistency(raw: np.ndarray, consistent: np.ndarray, constraints: Any, thresholds: Sequence[float]) -> dict[str, Any]:
    """Constraint-violation rates before/after the consistency operator.

    Reported on the decisions at the stored per-finding thresholds (violated (scan, constraint)
    pairs and scans with any violation) and on the probabilities themselves (``p_a <= p_b``,
    ``p_a + p_b <= 1``). After the operator both are zero by construction: the decisions are the
    predictor's (`medmm.knowledge.consistent_decisions`), which stay consistent even when the
    thresholds of a constraint's two findings differ.
    """
    from medmm.knowledge import consistent_decisions, violation_rate

    thr = torch.as_tensor(list(thresholds), dtype=torch.float32)

    def rates(probs: torch.Tensor, decision_scores: torch.Tensor, decision_thr: torch.Tensor | float) -> dict[str, float]:
        return {
            "per_constraint": float(violation_rate(decision_scores, constraints, decision_thr)),
            "per_scan": float(violation_rate(decision_scores, constraints, decision_thr, per="sample")),
            "continuous": float(violation_rate(probs, constraints, None)),
        }

    raw_t = torch.as_tensor(raw, dtype=torch.float32)
    cons_t = torch.as_tensor(consistent, dtype=torch.float32)
    # decisions are "score > 0.5" on the threshold-calibrated, consistent scores
    scores = consistent_decisions(cons_t, constraints, thr)[1].probs
    before, after = rates(raw_t, raw_t, thr), rates(cons_t, scores, 0.5)
    return {
        "n_implications": int(len(constraints.implications)),
        "n_exclusions": int(len(constraints.exclusions)),
        "raw": before,
        "consistent": after,
        "violation_rate_raw": before["per_constraint"],
        "violation_rate_consistent": after["per_constraint"],
        "mean_abs_change": float(np.abs(consistent - raw).mean()),
    }


def evaluate(
    run_dir: str | Path,
    manifest: str | Path,
    split: str = "test",
    out: str | Path | None = None,
    attack: str | Sequence[str] | None = None,
    eps_hu: Sequence[float] = DEFAULT_EPS_HU,
    n_bootstrap: int = 1000,
    seed: int = 0,
    pgd_steps: int = 10,
    n_bins: int = DEFAULT_BINS,
    device: str | None = None,
    protocol: str = "medmm",
) -> dict[str, Any]:
    """Evaluate a run on a manifest; write files to ``out`` when given.

    Args:
        run_dir: trained run directory (``model.safetensors`` + ``medmm.json``).
        manifest: CSV/JSONL manifest (see :func:`medmm.data.read_manifest`).
        split: ``test`` (default), ``val``, ``train`` or ``all`` (every row: external sets).
        out: output folder for metrics.json, per_finding.csv, PNGs and summary.html.
        attack: ``"fgsm"``, ``"pgd"`` or a list of them to add robustness sweeps, else None.
        eps_hu: attack budgets in HU (0 is always added as the clean reference).
        n_bootstrap: bootstrap resamples for AUROC CIs (protocol: >= 1000).
        seed: bootstrap and attack seed.
        pgd_steps: PGD iterations.
        n_bins: calibration bins.
        device: torch device for the model (default: the predictor's choice).
        protocol: ``medmm`` (default) or ``ctrate``, which adds the CT-RATE papers' metrics
            (`medmm.evaluation.ctrate`) under ``"ctrate"``.

    Returns:
        The metrics dict written to ``metrics.json`` (plus ``"files"`` when ``out`` is given).

    Raises:
        MedmmInputError: unreadable manifest/scans, empty split, leakage, unwritable ``out``.
        MedmmConfigError: the run lacks what evaluation needs (e.g. training patient ids).
    """
    from medmm.data.manifest import read_manifest
    from medmm.inference import load_model
    from medmm.knowledge import ReportLabeler

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    methods = [attack] if isinstance(attack, str) else list(attack or [])
    specs = [AttackSpec(m, tuple(float(e) for e in eps_hu), steps=pgd_steps) for m in dict.fromkeys(methods)]
    if out is not None:
        from medmm.evaluation.outputs import check_writable

        check_writable(out)  # fail in a second, not after the whole evaluation
    run_dir = Path(run_dir)
    predictor = load_model(run_dir, device=device)
    labels = list(predictor.labels)
    labeler = ReportLabeler(predictor.ontology, labels)
    cases = select_split(read_manifest(manifest, labels=labels, labeler=labeler), split, manifest)
    check_no_leakage(cases, training_patient_keys(predictor.meta, run_dir), manifest)
    y = label_matrix(cases, labels)
    if (y == -1).all():
        raise MedmmInputError(manifest, "no labels for the selected rows (no label columns and no reports)")

    torch.manual_seed(seed)
    log.info("evaluating %d scans", len(cases))
    pred = _predict_all(predictor, cases)
    thresholds = resolve_thresholds(predictor.thresholds, labels)
    cls = classification_metrics(y, pred["consistent"], labels, thresholds, n_bootstrap, seed)
    cls_raw = classification_metrics(y, pred["raw"], labels, thresholds, n_bootstrap, seed)["macro"]
    cal = calibration_metrics(y, pred["consistent"], labels, n_bins)
    for row in cls["per_finding"]:
        row["ece"] = cal["per_finding"][row["finding"]]

    from medmm.evaluation.text_metrics import report_metrics

    refs = [c.report or "" for c in cases]
    reports = report_metrics(pred["reports"], refs, labeler=labeler,
                             decisions=predictor.decide(torch.as_tensor(pred["consistent"])).numpy())

    robustness = None
    if specs:
        from medmm.data.transforms import hu_to_intensity_eps

        texts = pred["texts"]

        def logits_fn(x: torch.Tensor, idx: Sequence[int]) -> torch.Tensor:
            return predictor.forward_tensor(x, texts=[texts[i] for i in idx]).cpu()

        robustness = []
        for spec in specs:
            torch.manual_seed(seed)
            robustness += robustness_sweep(
                logits_fn, pred["images"], y, thresholds, spec,
                lambda e: hu_to_intensity_eps(e, predictor.preprocessing),
                bounds=tuple(predictor.preprocessing.intensity_range) if predictor.preprocessing.clip else None,
                seed=seed,
            )
        for row in robustness:
            row["model"] = predictor.model_id

    metrics: dict[str, Any] = {
        "model": predictor.model_info(),
        "split": split,
        "n_scans": len(cases),
        "n_patients": len({str(c.patient_id) for c in cases}),
        "labels": labels,
        "classification": cls,
        "classification_raw_macro": cls_raw,
        "per_finding": cls["per_finding"],
        "calibration": cal,
        "consistency": _consistency(pred["raw"], pred["consistent"], predictor.constraints, thresholds),
        "report_generation": reports,
        "robustness": robustness,
        "protocol": _protocol(split, n_bootstrap, seed, n_bins, specs, reports),
    }
    if protocol == "ctrate":  # issue 19: the CT-RATE papers' metrics, next to medmm's own
        from medmm.evaluation.ctrate import PROTOCOL as CTRATE_PROTOCOL, ctrate_metrics

        metrics["ctrate"] = ctrate_metrics(y, pred["consistent"], labels, n_bootstrap=n_bootstrap, seed=seed)
        metrics["protocol"]["ctrate"] = CTRATE_PROTOCOL
    if out is not None:
        from medmm.evaluation.outputs import write_evaluation

        figures = _figures(y, pred["consistent"], labels, cls, cal, robustness)
        metrics["files"] = sorted(write_evaluation(out, metrics, figures))
    return metrics


def _figures(y, probs, labels, cls, cal, robustness) -> dict[str, bytes]:
    from medmm.evaluation import plots

    figs = {
        "roc_curves.png": plots.roc_curves_png(y, probs, labels, [r["auroc"] for r in cls["per_finding"]]),
        "reliability.png": plots.reliability_png(cal["pooled"]),
    }
    if robustness:
        figs["robustness.png"] = plots.robustness_png(robustness)
    return figs


def _protocol(split, n_bootstrap, seed, n_bins, specs, reports) -> dict[str, str]:
    proto = {
        "split": f"manifest rows with split == {split!r}" if split != "all" else "every manifest row (--split all)",
        "leakage_guard": "refused if any evaluated patient id is among the run's training patient ids (medmm.json)",
        "label_source": "manifest label columns (missing/-1 = unknown, excluded per finding); when the manifest "
        "has no label columns, the ontology report labeler applied to the reference reports",
        "probabilities": "ontology-consistent probabilities (raw-probability macro metrics in classification_raw_macro)",
        "threshold_rule": "per-finding thresholds stored in the run's medmm.json (chosen on the validation split at training)",
        "auroc_ci": f"percentile bootstrap 95% CI, {n_bootstrap} resamples of scans with replacement, "
        f"numpy default_rng(seed={seed}); resamples with a single class are skipped per finding "
        "(counted in n_skipped); macro = mean over findings with both classes",
        "calibration": f"ECE over {n_bins} equal-width bins on [0,1] (MONAI calibration_binning), pooled over known (scan, finding) pairs",
        "consistency": "violation rate of the ontology constraints (medmm.knowledge.violation_rate) before/after make_consistent: "
        "of the decisions at the stored thresholds (per (scan, constraint) pair and per scan; after = the predictor's "
        "consistent_decisions) and on the probabilities themselves",
        "report_generation": reports.get("protocol", ""),
    }
    if specs:
        attacks = ", ".join(f"{s.method.upper()} (steps={s.steps if s.method == 'pgd' else 1})" for s in specs)
        proto["robustness"] = (
            f"{attacks} via "
            "medmm.models.adversarial.perturb on the preprocessed image, L-inf eps in HU converted by "
            "hu_to_intensity_eps; text fixed to the clean generated report; raw probabilities at stored thresholds"
        )
    return proto
