"""`medmm compress` end to end on a tiny trained run: the new run dir loads, predicts, records
what was done, and `medmm evaluate` prints it (slow: trains the tiny run)."""

from __future__ import annotations

import json

import pytest
import torch

from medmm.cli import main as cli_main
from training_helpers import TINY_LABELS
from medmm.errors import MedmmConfigError, MedmmInputError

pytestmark = pytest.mark.slow


def _cli(argv):
    try:
        cli_main(argv)
    except SystemExit as exit_:
        assert exit_.code in (0, None), f"exit {exit_.code}"


def test_structured_int8_run_reloads_predicts_and_is_smaller(tiny_run, tmp_path, heldout_manifest, capsys):
    import medmm
    from medmm.data import read_manifest

    out = tmp_path / "small"
    _cli(["compress", str(tiny_run), "--out", str(out), "--prune", "0.5", "--quantize", "int8",
          "--calibration-scans", "4"])
    meta = json.loads((out / "medmm.json").read_text())
    actions = [h["action"] for h in meta["model_history"]]
    assert actions[-2:] == ["pruned", "quantised"]  # after what the source run's history already says
    assert meta["model_history"][-2]["details"]["widths_after"] == [2, 4, 4, 4]
    assert meta["model_history"][-1]["details"]["calibration_scans"] == 4
    assert meta["workflow"]["network"]["image_encoder"]["widths"] == [2, 4, 4, 4]
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["best.safetensors"]
    assert (out / "best.safetensors").stat().st_size < 0.5 * (tiny_run / "best.safetensors").stat().st_size
    assert list(meta["thresholds"]) == meta["workflow"]["data"]["labels"]

    predictor = medmm.load_model(out, device="cpu")
    features = predictor.model.image_encoder._features
    assert any(".quantized." in type(m).__module__ for m in features.modules())  # int8 conv kernels run
    case = next(iter(read_manifest(heldout_manifest, labels=TINY_LABELS)))
    result = predictor.predict(case.image, force=True)  # tiny blob phantoms fail the chest-CT plausibility gate
    probs = [row["probability_raw"] for row in result.findings]
    assert len(probs) == 3 and all(0.0 <= p <= 1.0 for p in probs)
    fp32 = medmm.load_model(tiny_run, device="cpu")
    assert fp32.predict(case.image, force=True).findings != result.findings  # a different (compressed) model answered

    capsys.readouterr()
    _cli(["evaluate", str(out), "--data", str(heldout_manifest), "--split", "all", "--out", str(tmp_path / "eval"),
          "--n-bootstrap", "20"])
    printed = capsys.readouterr().out
    assert "model history: pruned (structured, ratio 0.5): widths [4, 8, 8, 8] -> [2, 4, 4, 4]" in printed
    assert "model history: quantised int8" in printed


def test_unstructured_run_is_sparse_and_loads(tiny_run, tmp_path):
    from medmm.deploy import compress_run
    from medmm.inference import load_model

    out = compress_run(tiny_run, tmp_path / "sparse", prune=0.5, prune_kind="unstructured", verbose=False)
    meta = json.loads((out / "medmm.json").read_text())
    assert meta["model_history"][-1]["details"]["sparsity"] >= 0.49
    model = load_model(out, device="cpu").model
    convs = [m.weight for m in model.image_encoder.backbone.modules() if isinstance(m, torch.nn.Conv3d)]
    assert sum(int((w == 0).sum()) for w in convs) >= 0.49 * sum(w.numel() for w in convs)


def test_distilled_student_records_its_teacher(tiny_run, tmp_path):
    from medmm.deploy import compress_run, describe_run
    from medmm.inference import load_model

    out = compress_run(tiny_run, tmp_path / "student", prune=0.5, finetune_epochs=1, distill_from=tiny_run,
                       verbose=False)
    meta = json.loads((out / "medmm.json").read_text())
    assert [h["action"] for h in meta["model_history"]][-2:] == ["pruned", "distilled"]
    teacher_id = load_model(tiny_run, device="cpu").model_id
    assert meta["model_history"][-1]["details"]["teacher"] == teacher_id
    assert any(f"teacher {teacher_id}" in line for line in describe_run(out))
    assert load_model(out, device="cpu").model.config.image_encoder.widths == [2, 4, 4, 4]


def test_compress_refuses_bad_requests(tiny_run, tmp_path):
    from medmm.deploy import compress_run

    with pytest.raises(MedmmConfigError, match="nothing to do"):
        compress_run(tiny_run, tmp_path / "a")
    with pytest.raises(MedmmConfigError, match="finetune-epochs"):
        compress_run(tiny_run, tmp_path / "b", distill_from=tiny_run)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("x")
    with pytest.raises(MedmmInputError, match="not empty"):
        compress_run(tiny_run, tmp_path / "c", prune=0.5)
    with pytest.raises(MedmmInputError, match="no medmm.json"):
        compress_run(tmp_path, tmp_path / "d", prune=0.5)
