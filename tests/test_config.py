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
    assert cfg.resolved_inferer.roi_size == (cfg.inferer.roi_size or cfg.preprocessing.roi_size)


def test_validation_writes_nothing_back():
    raw = {"preprocessing": {"roi_size": [16, 16, 16]}, "network": {"radiomics": {"intensity_hu": [-1000, 0, 1000]}}}
    cfg = load_workflow(raw)
    assert cfg.inferer.roi_size is None and cfg.resolved_inferer.roi_size == (16, 16, 16)
    assert load_workflow(cfg).model_dump() == cfg.model_dump()
    assert cfg.network.radiomics.intensity_hu == [-1000, 0, 1000]  # HU stay HU; input units are derived


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
        (MINIMAL, ["optimizer.lr=.nan"], "optimizer.lr: Input should be a finite number"),
        (MINIMAL, ["optimizer.lr=11"], "optimizer.lr: Input should be less than or equal to 10"),
        (MINIMAL, ["preprocessing.hu_window=[1000, -1000]"], "hu_window must be increasing"),
        (MINIMAL, ["preprocessing.hu_window=[-1000, .inf]"], "preprocessing.hu_window.1"),
        (MINIMAL, ["preprocessing.spacing=[0.01, 1, 1]"], "preprocessing.spacing.0"),
        (MINIMAL, ["preprocessing.spacing=[1, 1, 25]"], "preprocessing.spacing.2"),
        (MINIMAL, ["preprocessing.roi_size=[4, 16, 16]"], "preprocessing.roi_size.0"),
        (MINIMAL, ["inferer.overlap=0.95"], "inferer.overlap"),
        (MINIMAL, ["training.batch_size=5000"], "training.batch_size"),
        (MINIMAL, ["network.image_encoder.embed_dim=100000"], "network.image_encoder.embed_dim"),
        (MINIMAL, ["data.synthetic.n=200000"], "data.synthetic.n"),
        (MINIMAL, ["output.run_root=../../elsewhere"], "output.run_root: Value error, path '../../elsewhere' may not contain '..'"),
        (MINIMAL, ["output.run_root=/etc/medmm"], "inside the system folder /etc"),
        (MINIMAL, ["training.cache_dir=/usr/lib/cache"], "training.cache_dir"),
        (MINIMAL, ["preprocessing.orientation=RRS"], "orientation must be a 3-letter axis code"),
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
    assert cfg.resolved_inferer.roi_size == (8, 8, 8)  # defaults to the training roi


def test_resolved_config_round_trips(tmp_path):
    import yaml

    cfg = load_workflow(ROOT / "workflows" / "ct_chest_demo.yaml")
    path = _write(tmp_path, yaml.safe_dump(cfg.to_yaml_dict()))
    assert load_workflow(path) == cfg
