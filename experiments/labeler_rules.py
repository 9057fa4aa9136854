"""Rule labeler on labelled report sentences: micro/macro F1 and per-finding P/R/F1.

Run it before and after a change to the rules (``git stash`` / an older checkout) to get the
before -> after table of docs/knowledge.md::

    PYTHONPATH=$PWD python experiments/labeler_rules.py                       # real-style set
    PYTHONPATH=$PWD python experiments/labeler_rules.py tests/knowledge/*.tsv --json out.json

Each TSV has the columns ``sentence``, ``positive``, ``uncertain`` (';'-separated labels); lines
starting with ``#`` are comments. Uncertain mentions count as positive (``uncertain_as=1``), the
CT-RATE convention. With ``--errors`` every wrong sentence is printed (for error analysis only on
a development set: reading the errors of a held-out set makes it a development set).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[1] / "tests/knowledge/data/real_style_sentences.tsv"


def main(argv: list[str] | None = None) -> int:
    from medmm.knowledge import ReportLabeler, label_f1, load_ontology
    from medmm.knowledge.label_scores import read_sentence_tsv
    from medmm.labels import CT_RATE_FINDINGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tsv", nargs="*", type=Path, default=[DEFAULT])
    parser.add_argument("--json", type=Path, help="write the scores as JSON here")
    parser.add_argument("--errors", action="store_true", help="print the sentences labelled wrongly")
    args = parser.parse_args(argv)

    labeler = ReportLabeler(load_ontology())
    results = {}
    for path in args.tsv:
        rows = read_sentence_tsv(path)
        predicted = [labeler(text) for text, _ in rows]
        scores = label_f1(predicted, [exp for _, exp in rows], CT_RATE_FINDINGS)
        results[str(path)] = scores
        print(f"\n{path}  ({len(rows)} sentences)")
        print(f"micro P/R/F1 {scores['micro']['precision']:.3f} / {scores['micro']['recall']:.3f} / "
              f"{scores['micro']['f1']:.3f}    macro F1 {scores['macro']['f1']:.3f}")
        width = max(map(len, CT_RATE_FINDINGS))
        print(f"{'finding':<{width}}  {'n+':>3}  {'P':>5}  {'R':>5}  {'F1':>5}")
        for name in CT_RATE_FINDINGS:
            row = scores["per_label"][name]
            print(f"{name:<{width}}  {row['support']:>3}  {row['precision']:.3f}  {row['recall']:.3f}  {row['f1']:.3f}")
        if args.errors:
            for (text, exp), pred in zip(rows, predicted):
                missed = [k for k in CT_RATE_FINDINGS if exp[k] == 1 and pred[k] != 1]
                extra = [k for k in CT_RATE_FINDINGS if exp[k] != 1 and pred[k] == 1]
                if missed or extra:
                    print(f"  missed={missed} extra={extra} :: {text}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
