"""Grounded, verified reports of a trained run on a held-out set: agreement, truncation, CE-F1, speed.

For every scan of the manifest (all splits: use a set the run never saw, e.g.
``medmm data synth --seed 777 --n 80 --size 64 --out /tmp/heldout``) the run's predictor
classifies the scan, writes the report grounded on its decisions and verifies it. Printed:

- ``agreement``: fraction of (scan, finding) pairs where the labelled report equals the decision;
- ``truncated``: fraction of reports that do not end a sentence;
- CE-F1 micro/macro (labeler on generated vs reference reports) beside the classifier's own F1
  at its stored thresholds against the true labels (the ceiling of CE-F1 when agreement is 1);
- ``distinct_4`` (distinct 4-grams / all 4-grams over all reports), mean tokens, repairs per report
  (the shared metrics of ``medmm.evaluation.text_metrics``);
- report seconds per scan (decoding + verification, after the classifier) and the ratio to the
  2 s budget; with ``--compare-threads`` each report is written a second time with torch's own
  thread count while decoding (the baseline before ``medmm.models.decode_threads``), in the same
  run and alternating scan by scan so both see the same machine load, and the speed-up ratio is
  printed (the two reports must be identical);
- ``denials``: sentences that deny a finding decided present ("Heart size is normal." next to a
  cardiomegaly decision); the 0/1 agreement cannot see them, the verifier must leave none.

Usage::

    python benchmarks/report_generation.py demo_out/run --data /tmp/heldout/manifest.csv --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

BUDGET_S = 2.0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="trained run directory")
    parser.add_argument("--data", type=Path, required=True, help="manifest.csv of a held-out set")
    parser.add_argument("--n", type=int, default=None, help="only the first N scans")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    parser.add_argument("--compare-threads", action="store_true",
                        help="also time each report decoded with torch's thread count (baseline)")
    args = parser.parse_args(argv)

    import torch

    from medmm.data import read_manifest
    from medmm.data.transforms import preprocess_volume
    from medmm.inference import load_model
    from medmm.io import load_volume
    from medmm.knowledge import ReportLabeler
    from medmm.evaluation.text_metrics import agreement, distinct_n, mean_tokens, truncated_fraction
    from medmm.knowledge.labeler import clinical_efficacy_f1, label_f1

    torch.set_num_threads(max(1, torch.get_num_threads()))
    predictor = load_model(args.run, device="cpu")
    labels = predictor.labels
    labeler = ReportLabeler(predictor.ontology, labels)
    cases = list(read_manifest(args.data, labels))[: args.n]
    reports, references, decided, truth, seconds, repairs, baseline = [], [], [], [], [], [], []
    denials = 0
    for case in cases:
        image = preprocess_volume(load_volume(case.image), predictor.preprocessing)
        x = (image.as_tensor() if hasattr(image, "as_tensor") else image)[None].float()
        pred = predictor.predict_tensor(x, [case.indication])
        decisions = predictor.decide(pred.probs)
        with torch.inference_mode():
            _, tokens = predictor.model.embed(predictor.feature_map(x))
        start = time.perf_counter()
        checked = predictor.verified_reports(tokens, decisions, [""])[0]
        seconds.append(time.perf_counter() - start)
        assert checked.text == pred.reports[0]  # the benchmark times what the predictor returns
        if args.compare_threads:
            generator = predictor.model.report_generator
            default_cfg = generator.cfg
            generator.cfg = default_cfg.model_copy(update={"decode_threads": torch.get_num_threads()})
            start = time.perf_counter()
            again = predictor.verified_reports(tokens, decisions, [""])[0]
            baseline.append(time.perf_counter() - start)
            generator.cfg = default_cfg
            assert again.text == checked.text, "the thread count changed a report"
        verifier = predictor.verifier
        denials += len(verifier.denied(checked.text) & {f for f, v in zip(labels, decisions[0].tolist()) if v})
        reports.append(checked.text)
        repairs.append(len(checked.repairs))
        references.append(case.report or "")
        decided.append({f: int(v) for f, v in zip(labels, decisions[0].tolist())})
        truth.append({f: int((case.labels or {}).get(f, 0) == 1) for f in labels})

    stated = [labeler(r) for r in reports]
    agree = agreement(stated, [[d[f] for f in labels] for d in decided], labels)
    ce = clinical_efficacy_f1(reports, references, labeler)
    classifier = label_f1(decided, truth, labels)
    out = {
        "run": args.run.name, "data": str(args.data), "n_scans": len(cases),
        "agreement": agree["agreement"], "disagreements": agree["disagreements"],
        "truncated": truncated_fraction(reports),
        "ce_f1_micro": ce["micro"]["f1"], "ce_f1_macro": ce["macro"]["f1"],
        "classifier_f1_micro": classifier["micro"]["f1"], "classifier_f1_macro": classifier["macro"]["f1"],
        "distinct_4": distinct_n(reports, 4),
        "distinct_reports": len(set(reports)) / max(1, len(reports)),
        "mean_tokens": mean_tokens(reports),
        "mean_repairs": statistics.mean(repairs), "reports_repaired": sum(r > 0 for r in repairs) / len(repairs),
        "report_s_mean": statistics.mean(seconds), "report_s_max": max(seconds),
        "report_s_ratio_to_budget": statistics.mean(seconds) / BUDGET_S,
        "denials": denials, "torch_threads": torch.get_num_threads(),
        "example": reports[0] if reports else None,
    }
    if baseline:
        out["baseline_report_s_mean"] = statistics.mean(baseline)
        out["speedup_vs_baseline"] = statistics.mean(baseline) / statistics.mean(seconds)
    for key, value in out.items():
        print(f"{key:>26}: {value:.3f}" if isinstance(value, float) else f"{key:>26}: {value}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
