"""Are the explanations faithful? Pointing game, energy in lesion, counterfactual sensitivity.

On synthetic phantoms every lesion is known: the counterfactual twin (``medmm.data.synth.twins``,
the same scan without the finding) gives each true finding's lesion mask, and the model's
probability on the twin says how much the finding's own image evidence drives its output.
Per finding, over the held-out scans where it is present:

- ``pointing``: fraction whose evidence peak lies in the lesion (dilated by ``tolerance`` voxels;
  Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016). A map that
  localises nothing (``evidence.localisation``) has no peak and counts as a miss;
- ``localised``: fraction of maps that pass the localisation test;
- ``energy``: fraction of the evidence mass inside the lesion, next to ``lesion_fraction`` (the
  lesion's share of the body, what a uniform map would score);
- ``in_site`` / ``flagged``: mean evidence fraction inside the finding's anatomical site and the
  share of maps the site check flags, on true lesions (``medmm.inference.anatomy``);
- ``prob_drop``: mean p(scan) - p(twin) of the finding (causal sensitivity), and ``other_shift``:
  mean |change| of the findings that were not removed (they should not move).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmm.errors import MedmmInputError

POINTING_TOLERANCE = 1  # voxels


def synthetic_params(manifest: str | Path) -> dict[str, Any]:
    """``n``, ``seed``, ``size`` of the synthetic set a manifest belongs to (its ``synth.json``).

    Raises:
        MedmmInputError: no ``synth.json`` next to the manifest: lesion masks are unknown.
    """
    path = Path(manifest).parent / "synth.json"
    try:
        params = json.loads(path.read_text())["params"]
        return {"n": int(params["n"]), "seed": int(params["seed"]), "size": int(params["size"])}
    except (OSError, ValueError, KeyError, TypeError):
        raise MedmmInputError(manifest, "--explain needs a synthetic manifest (medmm data synth): lesion masks "
                                        "come from re-rendering its phantoms, and no readable synth.json is "
                                        "next to it") from None


def _volume(phantom):
    from medmm.io import Volume

    # what the data set stores: HU rounded to int16
    return Volume(array=np.rint(phantom.hu).astype(np.float32), affine=phantom.affine, meta={})


def _to_model_grid(mask: np.ndarray, phantom, result) -> np.ndarray:
    """A phantom-grid mask resampled (nearest) onto the model's preprocessed grid."""
    from scipy.ndimage import affine_transform

    mapping = np.linalg.inv(np.asarray(phantom.affine, np.float64)) @ np.asarray(result.image_affine, np.float64)
    out = affine_transform(mask.astype(np.float32), mapping[:3, :3], offset=mapping[:3, 3],
                           output_shape=tuple(result.image.shape), order=0, mode="constant", cval=0.0)
    return out > 0.5


def score_map(heat: np.ndarray, loc: Any, lesion: np.ndarray, body: np.ndarray,
              tolerance: int = POINTING_TOLERANCE) -> dict[str, float]:
    """Pointing hit, energy in lesion and the lesion's share of the body for one map."""
    from scipy.ndimage import binary_dilation

    heat = np.clip(np.asarray(heat, np.float64), 0.0, None)
    zone = binary_dilation(lesion, iterations=tolerance) if tolerance > 0 else lesion
    hit = bool(loc.localised and loc.peak is not None and zone[tuple(loc.peak)])
    total = float(heat[body].sum())
    energy = float(heat[lesion & body].sum()) / total if total > 0 else 0.0
    return {"hit": float(hit), "localised": float(loc.localised), "energy": energy,
            "lesion_fraction": float(lesion[body].mean()) if body.any() else 0.0}


def evaluate_faithfulness(predictor: Any, manifest: str | Path, split: str = "test",
                          methods: Sequence[str] | None = None, limit: int | None = None,
                          progress: Any = None) -> dict[str, Any]:
    """Faithfulness of ``methods`` on the phantoms of a synthetic manifest (see module docstring).

    Args:
        predictor: a loaded :class:`medmm.inference.Predictor`.
        manifest: a manifest written by ``medmm data synth`` / :func:`medmm.data.synth.synthesize`.
        split: rows to use (``all`` for every row).
        methods: evidence methods to score (default: the predictor's).
        limit: at most this many scans (first ones of the split).

    Returns:
        ``{"per_finding": {finding: {...}}, "methods": [...], "n_scans": ..., "seconds": {...}}``.
    """
    from medmm.data.manifest import read_manifest
    from medmm.data.synth.twins import case_scan, lesion_mask, render_twin
    from medmm.data.synth.generator import render_scan
    from medmm.inference.anatomy import anatomy_map, site_check
    from medmm.inference.evidence import DEFAULT_METHOD, localisation
    from medmm.inference.explain import intensity_to_hu

    params = synthetic_params(manifest)
    cases = [c for c in read_manifest(manifest) if split == "all" or c.split == split]
    cases = [c for c in cases if "counterfactual" not in (c.meta or {})][: limit or None]
    methods = list(methods or [getattr(predictor, "evidence_method", DEFAULT_METHOD)])
    ontology = getattr(predictor, "ontology", None)
    rows: dict[str, list[dict[str, Any]]] = {}
    seconds = {m: 0.0 for m in methods}
    for case in cases:
        entropy, scan_index, n_scans, labels = case_scan(case.case_id, params["n"], params["seed"])
        phantom, _, _, _ = render_scan(entropy, params["size"], labels, scan_index, n_scans)
        result = predictor.predict(_volume(phantom), force=True)
        probs = {r["finding"]: float(r["probability"]) for r in result.findings}
        amap = anatomy_map(intensity_to_hu(result.image, predictor.preprocessing),
                           tuple(result.preprocessed["spacing"]))
        body = amap.labels > 0
        for finding in [f for f in predictor.labels if labels.get(f, 0) == 1]:
            twin, removed = render_twin(entropy, params["size"], labels, finding, scan_index, n_scans)
            lesion = _to_model_grid(lesion_mask(phantom, twin), phantom, result)
            # probabilities only: a twin needs no report (one per positive finding, the slow part on CPU)
            twin_image = predictor.preprocess(_volume(twin))
            twin_row = predictor.predict_tensor(torch.as_tensor(twin_image)[None].float(), reports=False).probs[0]
            twin_probs = dict(zip(predictor.labels, twin_row.tolist()))
            others = [f for f in predictor.labels if f not in removed]
            row: dict[str, Any] = {
                "drop": probs[finding] - twin_probs[finding],
                "other_shift": float(np.mean([abs(probs[f] - twin_probs[f]) for f in others])) if others else 0.0,
                "lesion_voxels": int(lesion.sum()),
            }
            for method in methods:
                start = time.perf_counter()
                heat = np.asarray(result._explainer.heatmap(finding, method=method).array)
                seconds[method] += time.perf_counter() - start
                if lesion.any():
                    loc = localisation(heat)
                    row[method] = score_map(heat, loc, lesion, body)
                    check = site_check(finding, ontology.anatomical_site(finding) if ontology else None,
                                       heat, amap, loc.localised, ontology)
                    if check["fraction_in_site"] is not None:  # evidence on true lesions vs the site check
                        row[method]["in_site"] = check["fraction_in_site"]
                        row[method]["flagged"] = float(check["flag"] is not None)
            rows.setdefault(finding, []).append(row)
        if progress:
            progress(1)
    return {"methods": methods, "n_scans": len(cases), "split": split, "synthetic": params,
            "tolerance_voxels": POINTING_TOLERANCE,
            "per_finding": {f: _summarise(r, methods) for f, r in rows.items()},
            "overall": _overall(rows, methods),
            "seconds_per_scan": {m: round(s / max(len(cases), 1), 3) for m, s in seconds.items()}}


def _summarise(rows: list[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows), "prob_drop": round(float(np.mean([r["drop"] for r in rows])), 4),
                           "other_shift": round(float(np.mean([r["other_shift"] for r in rows])), 4)}
    for m in methods:
        scored = [r[m] for r in rows if m in r]
        if scored:
            out[m] = {k: round(float(np.mean([s[k] for s in scored])), 4)
                      for k in ("hit", "localised", "energy", "lesion_fraction")}
            out[m]["pointing"] = out[m].pop("hit")
            sited = [s for s in scored if "in_site" in s]
            if sited:
                out[m]["in_site"] = round(float(np.mean([s["in_site"] for s in sited])), 4)
                out[m]["flagged"] = round(float(np.mean([s["flagged"] for s in sited])), 4)
    return out


def _overall(rows: dict[str, list[dict[str, Any]]], methods: Sequence[str]) -> dict[str, Any]:
    """Macro averages over findings (each finding weighs the same, however common)."""
    out: dict[str, Any] = {}
    for m in methods:
        per = [_summarise(r, [m]).get(m) for r in rows.values()]
        per = [p for p in per if p]
        if per:
            out[m] = {k: round(float(np.mean([p[k] for p in per if k in p])), 4)
                      for k in ("pointing", "localised", "energy", "lesion_fraction", "in_site", "flagged")
                      if any(k in p for p in per)}
    all_rows = [r for rs in rows.values() for r in rs]
    if all_rows:
        out["prob_drop"] = round(float(np.mean([_summarise(r, [])["prob_drop"] for r in rows.values()])), 4)
        out["other_shift"] = round(float(np.mean([_summarise(r, [])["other_shift"] for r in rows.values()])), 4)
    return out


def faithfulness_table(report: dict[str, Any]) -> str:
    """A short plain-text table: one row per finding, one pointing/energy pair per method."""
    methods = report["methods"]
    head = f"{'finding':<36} {'n':>3} {'p drop':>7} {'others':>7}" + "".join(
        f" {m[:14] + ' pt':>17} {'energy':>7}" for m in methods)
    lines = [head]
    for finding, row in sorted(report["per_finding"].items()):
        cells = "".join(f" {row[m]['pointing']:>17.2f} {row[m]['energy']:>7.3f}" if m in row else f" {'-':>17} {'-':>7}"
                        for m in methods)
        lines.append(f"{finding:<36} {row['n']:>3} {row['prob_drop']:>7.3f} {row['other_shift']:>7.3f}{cells}")
    overall = report["overall"]
    cells = "".join(f" {overall[m]['pointing']:>17.2f} {overall[m]['energy']:>7.3f}" if m in overall else ""
                    for m in methods)
    lines.append(f"{'macro mean':<36} {'':>3} {overall.get('prob_drop', 0):>7.3f} {overall.get('other_shift', 0):>7.3f}{cells}")
    return "\n".join(lines)


def write_faithfulness(out_dir: str | Path, report: dict[str, Any]) -> list[str]:
    """Add ``report`` as the ``explanations`` section of ``out_dir/metrics.json`` and write the
    table to ``explanations.txt`` (both atomically). Returns the file names written."""
    from medmm.evaluation.outputs import to_json
    from medmm.io.writers import atomic_write_bytes

    out = Path(out_dir)
    path = out / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics["explanations"] = report
    atomic_write_bytes(out / "explanations.txt", (faithfulness_table(report) + "\n").encode())
    atomic_write_bytes(path, to_json(metrics).encode())
    return ["explanations.txt", "metrics.json"]


def check_methods(methods: str) -> list[str] | None:
    """``--explain`` value → method names (None: the predictor's default).

    Raises:
        MedmmConfigError: an unknown method.
    """
    from medmm.errors import MedmmConfigError
    from medmm.inference.evidence import METHODS

    names = None if methods in ("default", "") else [m.strip() for m in methods.split(",") if m.strip()]
    unknown = sorted(set(names or []) - set(METHODS))
    if unknown:
        raise MedmmConfigError("--explain", f"unknown evidence method(s) {', '.join(unknown)}; "
                                            f"choose from {', '.join(METHODS)}")
    return names


def run_faithfulness(run_dir: str | Path, manifest: str | Path, split: str, out: str | Path, methods: str,
                     limit: int | None, device: str | None, echo: Any = print) -> list[str]:
    """``medmm evaluate --explain``: load the run, score ``methods`` ("default" = the predictor's
    method), print the table and add it to the evaluation's files."""
    from medmm.inference import load_model

    synthetic_params(manifest)  # fail fast, before loading the model
    names = check_methods(methods)
    predictor = load_model(run_dir, device=device)
    start = time.perf_counter()
    report = evaluate_faithfulness(predictor, manifest, split=split, methods=names, limit=limit)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    echo(faithfulness_table(report))
    echo(f"explanations: {report['n_scans']} scans, {report['wall_s']} s")
    return write_faithfulness(out, report)
