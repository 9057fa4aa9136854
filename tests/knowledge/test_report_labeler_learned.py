"""Learned report labeler: report CSV reading, training + k-fold CV on synthetic reports with a tiny
randomly-initialised BERT loaded through the real ``from_pretrained``, save/load, and the CLI."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pandas as pd
import pytest

from medmm.data.report_table import read_report_table
from medmm.data.synth.texts import synthetic_report, synthetic_reports
from medmm.errors import MedmmInputError
from medmm.labels import CT_RATE_FINDINGS
from medmm.models.report_labeler import LearnedLabeler, load_labeler
from medmm.training.report_labeler import LabelerTrainConfig, choose_thresholds, cross_validate, train_labeler

LABELS = list(CT_RATE_FINDINGS)
FAST = dict(epochs=1, batch_size=8, lr=1e-3, max_length=64, max_steps=2)


@pytest.fixture(scope="module")
def reports():
    rows = synthetic_reports(40, seed=3)
    return [r for r, _ in rows], np.array([[lab[k] for k in LABELS] for _, lab in rows])


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, reports):
    """A 2-layer BERT with a word-level vocabulary of the synthetic reports, saved with save_pretrained."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for r in synthetic_reports(300, seed=99) + [(t, None) for t in reports[0]]
                    for w in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", r[0].lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    BertModel(config).save_pretrained(folder)
    BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    return folder


def write_csv(path, texts, y, drop=()):
    frame = pd.DataFrame({"id": range(len(texts)), "report": texts})
    for j, lab in enumerate(LABELS):
        if lab not in drop:
            frame[lab] = y[:, j]
    frame.to_csv(path, index=False)
    return path


def test_synthetic_reports_match_the_image_generator():
    from medmm.data.synth.generator import render_scan

    report, labels = synthetic_report(1234)
    _, labels2, report2, _ = render_scan(1234, 8)
    assert (report, labels) == (report2, labels2)
    assert synthetic_reports(3, seed=5) == synthetic_reports(3, seed=5) != synthetic_reports(3, seed=6)


def test_read_report_table(tmp_path, reports):
    texts, y = reports
    table = read_report_table(write_csv(tmp_path / "r.csv", texts, y), "report", LABELS)
    assert table.texts == texts and (table.y == y).all()
    frame = pd.read_csv(tmp_path / "r.csv", dtype=str)
    frame.loc[0, "Emphysema"] = ""  # empty cell = unknown
    frame.to_csv(tmp_path / "u.csv", index=False)
    assert read_report_table(tmp_path / "u.csv", "report", LABELS).y[0, LABELS.index("Emphysema")] == -1


@pytest.mark.parametrize("case,match", [
    ("missing", "not found"),
    ("column", "no column 'reprot'.*did you mean 'report'"),
    ("labels", "missing label column.*'Emphysema'"),
    ("value", "line 2, column 'Emphysema': 'yes' is not 0, 1 or empty"),
    ("empty", "no rows"),
])
def test_report_table_errors(tmp_path, reports, case, match):
    texts, y = reports
    path = write_csv(tmp_path / "r.csv", texts, y, drop=("Emphysema",) if case == "labels" else ())
    column = "report"
    if case == "missing":
        path = tmp_path / "absent.csv"
    elif case == "column":
        column = "reprot"
    elif case == "value":
        frame = pd.read_csv(path, dtype=str)
        frame.loc[0, "Emphysema"] = "yes"
        frame.to_csv(path, index=False)
    elif case == "empty":
        path.write_text("report," + ",".join(LABELS) + "\n")
    with pytest.raises(MedmmInputError, match=match):
        read_report_table(path, column, LABELS)


def test_choose_thresholds():
    probs = np.array([[0.9, 0.2], [0.8, 0.1], [0.3, 0.3], [0.1, 0.05]])
    y = np.array([[1, 0], [1, 0], [0, 0], [0, -1]])
    t = choose_thresholds(probs, y)
    assert 0.3 <= t[0] < 0.8 and t[1] == 0.5  # no positives -> 0.5


def test_train_save_load_roundtrip(tmp_path, reports, tiny_bert):
    texts, y = reports
    cfg = LabelerTrainConfig(model=str(tiny_bert), **FAST)
    labeler = train_labeler(texts, y, LABELS, cfg)
    again = train_labeler(texts, y, LABELS, cfg)
    probs = labeler.predict_proba(texts[:5])
    assert np.allclose(probs, again.predict_proba(texts[:5]))  # same seed -> same model
    out = labeler.save_atomic(tmp_path / "lab")
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert "head.safetensors" in files and "model.safetensors" in files and "labeler.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pth"))]
    meta = json.loads((out / "labeler.json").read_text())
    assert meta["labels"] == LABELS and meta["base_model"] == str(tiny_bert) and len(meta["base_model_sha256"]) == 64
    assert meta["training"]["n_train"] + meta["training"]["n_val"] == len(texts)
    loaded = load_labeler(out)
    assert isinstance(loaded, LearnedLabeler)
    assert np.allclose(loaded.predict_proba(texts[:5]), probs, atol=1e-6)
    assert loaded(texts[0]) == loaded.label_many(texts[:1])[0] and set(loaded(texts[0])) == set(LABELS)
    labeler.save_atomic(out)  # an earlier labeler folder is replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(MedmmInputError, match="neither empty nor a labeler folder"):
        labeler.save_atomic(tmp_path / "other")
    with pytest.raises(MedmmInputError, match="not a learned labeler folder"):
        load_labeler(tmp_path / "other")


def test_cross_validation_runs_every_fold(reports, tiny_bert):
    texts, y = reports
    cv = cross_validate(texts, y, LABELS, 2, LabelerTrainConfig(model=str(tiny_bert), **FAST))
    assert len(cv["per_fold"]) == 2 and 0 <= cv["micro_f1"]["mean"] <= 1
    with pytest.raises(MedmmInputError, match="folds"):
        cross_validate(texts[:6], y[:6], LABELS, 4, LabelerTrainConfig(model=str(tiny_bert), **FAST))


@pytest.mark.slow
def test_cross_validated_labeler_learns_synthetic_reports(tiny_bert):
    """3-fold CV on 120 synthetic reports: held-out micro F1 clearly above the best constant labeler."""
    rows = synthetic_reports(120, seed=7)
    texts, y = [r for r, _ in rows], np.array([[lab[k] for k in LABELS] for _, lab in rows])
    cfg = LabelerTrainConfig(model=str(tiny_bert), epochs=25, batch_size=16, lr=3e-3, max_length=128, patience=4)
    cv = cross_validate(texts, y, LABELS, 3, cfg)
    prevalence = y.mean()
    constant = 2 * prevalence / (1 + prevalence)  # micro F1 of labelling everything positive
    assert cv["micro_f1"]["mean"] > constant + 0.15, (cv["micro_f1"], constant)


def run_cli(capsys, *args):
    """``medmm ARGS`` in-process through the console entry point (exit code, stdout, stderr)."""
    from medmm.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def test_cli_train_and_label(tmp_path, capsys, reports, tiny_bert):
    texts, y = reports
    data = write_csv(tmp_path / "reports.csv", texts, y)
    out = tmp_path / "labeler"
    res = run_cli(capsys, "labeler", "train", "--data", data, "--text-column", "report", "--out", out, "--model", tiny_bert,
                  "--epochs", 1, "--max-steps", 2, "--max-length", 64, "--batch-size", 8)
    assert res.returncode == 0, res.stderr
    assert (out / "labeler.json").is_file() and "validation" in res.stdout
    unlabelled = tmp_path / "unlabelled.csv"
    pd.DataFrame({"id": range(5), "report": texts[:5]}).to_csv(unlabelled, index=False)
    for spec in ("rules", out):
        dest = tmp_path / f"labelled_{'rules' if spec == 'rules' else 'learned'}.csv"
        res = run_cli(capsys, "data", "label", "--data", unlabelled, "--text-column", "report", "--labeler", spec, "--out", dest)
        assert res.returncode == 0, res.stderr
        frame = pd.read_csv(dest)
        assert list(frame.columns) == ["id", "report", *LABELS] and len(frame) == 5
        assert set(frame[LABELS].to_numpy().ravel()) <= {0, 1}
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    rules = pd.read_csv(tmp_path / "labelled_rules.csv")
    assert (rules[LABELS].to_numpy() == y[:5]).mean() > 0.95  # the rule labeler reads synthetic reports


@pytest.mark.parametrize("args,match", [
    (["data", "label", "--data", "{tmp}/absent.csv", "--out", "{tmp}/o.csv"], "absent.csv: report CSV not found"),
    (["data", "label", "--data", "{tmp}/reports.csv", "--text-column", "text", "--out", "{tmp}/o.csv"], "no column 'text'"),
    (["data", "label", "--data", "{tmp}/reports.csv", "--labeler", "{tmp}", "--out", "{tmp}/o.csv"], "not a learned labeler folder"),
    (["labeler", "train", "--data", "{tmp}/partial.csv", "--out", "{tmp}/lab"], "missing label column"),
    (["labeler", "train", "--data", "{tmp}/three.csv", "--out", "{tmp}/lab"], "three.csv: 3 reports are too few"),
    (["labeler", "train", "--data", "{tmp}/reports.csv", "--out", "{tmp}/lab", "--model", "{tmp}/no_model"],
     "--model: cannot load .*no_model.* offline"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, reports, args, match):
    texts, y = reports
    write_csv(tmp_path / "reports.csv", texts[:6], y[:6])
    write_csv(tmp_path / "partial.csv", texts[:6], y[:6], drop=("Hiatal hernia",))
    write_csv(tmp_path / "three.csv", texts[:3], y[:3])
    res = run_cli(capsys, *[a.format(tmp=tmp_path) for a in args])
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and re.search(match, lines[0]), res.stderr
