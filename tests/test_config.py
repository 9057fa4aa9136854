"""Workflow schema: valid files load, every kind of mistake is one clear MedmmConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmm.config import WorkflowConfig, load_workflow, parse_overrides
from medmm.errors import MedmmConfigError

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = "preprocessing: {roi_size: [16, 16, 16]}\n"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["ct_chest.yaml", "ct_chest_demo.yaml"])
def test_shipped_workflows_validate(name):
    cfg = load_workflow(ROOT / "workflows" / name)
    assert isinstance(cfg, WorkflowConfig)
    assert cfg.inferer.roi_size is not None


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        (MINIMAL + "training: {epochz: 3}\n", None, "training.epochz: unknown key; did you mean 'training.epochs'"),
        (MINIMAL + "training: {epochs: three}\n", None, "training.epochs: Input should be a valid integer"),
        (MINIMAL + "network: {image_encoder: {nmae: slim}}\n", None, "did you mean 'network.image_encoder.name'"),
        (MINIMAL + "training: {adversarial: {method: cw}}\n", None, "training.adversarial.method"),
        (MINIMAL + "data: {source: manifest}\n", None, "data.manifest section is missing"),
        (MINIMAL + "optimizer: {lr: -1}\n", None, "optimizer.lr"),
        (MINIMAL + "bogus: 1\n", None, "bogus: unknown key"),
        ("name: !!python/object/apply:os.system ['echo pwned']\n" + MINIMAL, None, "not a valid data-only YAML"),
        ("- a\n- b\n", None, "must be a mapping"),
        (MINIMAL, ["training.epochs=abc"], "training.epochs"),
        (MINIMAL, ["training.epochs"], "must look like section.key=value"),
        (MINIMAL, ["preprocessing.roi_size.x=1"], "is a value, not a section"),
        (MINIMAL, ["training.label_fraction=0"], "training.label_fraction"),
    ],
)
def test_bad_workflows_name_file_and_key(tmp_path, text, overrides, expected):
    path = _write(tmp_path, text)
    with pytest.raises(MedmmConfigError) as info:
        load_workflow(path, overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    if overrides is None:
        assert str(path) in message


def test_python_tag_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(MedmmConfigError):
        load_workflow(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "items, expected",
    [
        (["training.epochs=2"], {"training.epochs": 2}),
        (["optimizer.lr=1e-4"], {"optimizer.lr": 1e-4}),
        (["training.amp=false"], {"training.amp": False}),
        (["preprocessing.roi_size=[8, 8, 8]"], {"preprocessing.roi_size": [8, 8, 8]}),
        (["name=a=b"], {"name": "a=b"}),
        (["ontology.path="], {"ontology.path": None}),
    ],
)
def test_overrides_are_yaml_scalars(items, expected):
    assert parse_overrides(items) == expected


def test_overrides_apply_and_validate():
    cfg = load_workflow({"preprocessing": {"roi_size": [8, 8, 8]}},
                        ["training.epochs=2", "loss.pos_weight=auto", "training.adversarial.method=pgd"])
    assert (cfg.training.epochs, cfg.loss.pos_weight, cfg.training.adversarial.method) == (2, "auto", "pgd")
    assert cfg.inferer.roi_size == (8, 8, 8)  # defaults to the training roi


def test_resolved_config_round_trips(tmp_path):
    import yaml

    cfg = load_workflow(ROOT / "workflows" / "ct_chest_demo.yaml")
    path = _write(tmp_path, yaml.safe_dump(cfg.to_yaml_dict()))
    assert load_workflow(path) == cfg
