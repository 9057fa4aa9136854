"""End-to-end training on a tiny data set: run directory, determinism, resume, Ctrl-C, CLI."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from medmm.config import load_workflow
from medmm.errors import MedmmConfigError, MedmmInputError
from medmm.training import hash_patient_id, train
from medmm.training.rundir import read_jsonl

from training_helpers import TINY_LABELS, interrupt_then_resume, tiny_workflow

RUN_FILES = ["workflow.yaml", "medmm.json", "best.safetensors", "last.safetensors", "metrics.jsonl",
             "timing.jsonl", "state.json", "state.safetensors", "model_card.md"]


@pytest.fixture(scope="module")
def one_epoch_run(tiny_manifest, tmp_path_factory):
    torch.set_num_threads(1)  # module-scoped: set up before conftest's per-test thread setting
    return train(tiny_workflow(tiny_manifest), run_dir=tmp_path_factory.mktemp("runs") / "r1", verbose=False)


@pytest.mark.slow
def test_one_epoch_run_writes_a_complete_run_dir(one_epoch_run, tiny_manifest):
    run = one_epoch_run
    for name in RUN_FILES:
        assert (run.run_dir / name).is_file(), name
    assert any((run.run_dir / "tb").iterdir())
    assert len(run.metrics) == 1 and run.best["epoch"] == 1
    meta = run.meta
    assert meta.labels == TINY_LABELS and list(meta.thresholds) == TINY_LABELS
    assert meta.preprocessing.roi_size == (16, 16, 16) and meta.inferer.roi_size == (16, 16, 16)
    raw = json.loads((run.run_dir / "medmm.json").read_text())
    assert raw["schema"] == "medmm.run/2" and "labels" not in raw and "preprocessing" not in raw  # each fact once
    assert json.dumps(raw).count(meta.ontology.sha256) == 1
    rates = meta.reference.val_positive_rate
    assert set(rates) <= set(TINY_LABELS) and meta.reference.input_hu.quantiles["0.01"] >= -1000
    ids = meta.data.patient_id_sha256
    assert sum(map(len, ids.values())) == 12 and not set(ids["train"]) & set(ids["val"])
    assert hash_patient_id("p00") in ids["train"] + ids["val"]
    assert "p00" not in json.dumps(raw)  # no raw patient ids in the run directory
    # the resolved workflow reloads to the same config
    assert load_workflow(run.run_dir / "workflow.yaml") == run.config
    card = (run.run_dir / "model_card.md").read_text()
    assert f"macro AUROC (evaluated findings): {run.best['val_macro_auroc']:.3f}" in card


@pytest.mark.slow
def test_checkpoint_loads_and_predicts(one_epoch_run):
    from medmm.models import load_checkpoint

    model, meta = load_checkpoint(one_epoch_run.run_dir, "best")
    with torch.no_grad():
        logits = model(torch.zeros(1, 1, 16, 16, 16), ["Findings: none."])
    assert logits.shape == (1, len(TINY_LABELS)) and meta.best_epoch == 1
    # the decoder's vocabulary is the training reports' tokens, derived once and stored with the run
    vocab = meta.network_derived.vocab_ids
    assert vocab and "vocab_ids" not in one_epoch_run.config.network.report_generator.model_dump()
    assert model.report_generator.lm.get_output_embeddings().weight.shape[0] == len(vocab)
    assert len(vocab) < len(model.report_generator.tokenizer)
    assert isinstance(model.generate_reports(model.embed(model.feature_map(torch.zeros(1, 1, 16, 16, 16)))[1])[0], str)


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(one_epoch_run, tiny_manifest, tmp_path):
    again = train(tiny_workflow(tiny_manifest), run_dir=tmp_path / "r2", verbose=False)
    first = (one_epoch_run.run_dir / "metrics.jsonl").read_text()
    assert (again.run_dir / "metrics.jsonl").read_text() == first


@pytest.mark.slow
def test_ctrl_c_then_resume_matches_an_uninterrupted_run(tiny_manifest, tmp_path, monkeypatch):
    wf = tiny_workflow(tiny_manifest, **{"training.epochs": 3,
                                         "training.adversarial": {"method": "pgd", "fraction": 0.5}})
    straight = train(wf, run_dir=tmp_path / "straight", verbose=False)
    state, weights, resumed = interrupt_then_resume(wf, tmp_path / "r", monkeypatch)
    assert state["interrupted"] is True and state["epoch"] == 1
    assert weights  # a complete safetensors checkpoint
    assert [r["epoch"] for r in resumed.metrics] == [1, 2, 3]
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == (straight.run_dir / "metrics.jsonl").read_text()
    assert any(r["train_adv_fraction"] > 0 for r in straight.metrics)  # adversarial batches took part


@pytest.mark.slow
def test_resume_extends_a_finished_run(tiny_manifest, tmp_path):
    train(tiny_workflow(tiny_manifest), run_dir=tmp_path / "r", verbose=False)
    run = train(None, run_dir=tmp_path / "r", resume=True, verbose=False, training__epochs=2)
    assert [r["epoch"] for r in run.metrics] == [1, 2]
    assert len(read_jsonl(tmp_path / "r" / "metrics.jsonl")) == 2
    assert yaml.safe_load((tmp_path / "r" / "workflow.yaml").read_text())["training"]["epochs"] == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"resume": True}, "needs --run-dir"),
    ({"resume": True, "run_dir": "/nonexistent/run"}, "nothing to resume"),
])
def test_resume_errors(kwargs, message):
    with pytest.raises(MedmmConfigError, match=message):
        train(None, **kwargs)


def test_empty_validation_split_is_a_config_error(tiny_manifest, tmp_path):
    import csv

    rows = list(csv.DictReader(tiny_manifest.open()))
    for row in rows:
        row.update(split="train", image=str(tiny_manifest.parent / row["image"]))
    manifest = tmp_path / "all_train.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(MedmmConfigError, match="val split is empty"):
        train(tiny_workflow(manifest), run_dir=tmp_path / "r", verbose=False)


@pytest.mark.slow
def test_cli_train_and_errors(tiny_manifest, tmp_path):
    from click.testing import CliRunner

    from medmm.cli import cli

    wf = tmp_path / "wf.yaml"
    wf.write_text(yaml.safe_dump(tiny_workflow(tiny_manifest)))
    result = CliRunner().invoke(cli, ["train", str(wf), "--run-dir", str(tmp_path / "run"), "--quiet",
                                      "--set", "training.batch_size=6", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "val macro AUROC" in result.output
    saved = yaml.safe_load((tmp_path / "run" / "workflow.yaml").read_text())
    assert saved["training"]["batch_size"] == 6
