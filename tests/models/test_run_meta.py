"""RunMeta: a run dir is validated whole before anything is built; old layouts migrate or are refused."""

from __future__ import annotations

import json

import pytest
import torch

from medmm.errors import MedmmInputError
from medmm.models import MedMM, load_checkpoint, read_run_meta, save_checkpoint

from .conftest import meta_for

LABELS = ["Emphysema", "Cardiomegaly", "Atelectasis"]


@pytest.fixture
def run(tiny_config, tmp_path):
    model = MedMM(tiny_config(), LABELS).eval()
    save_checkpoint(model, tmp_path, "best", meta_for(model))
    return tmp_path


def _edit(run, change):
    path = run / "medmm.json"
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def _set(*keys, value):
    def change(raw):
        node = raw
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return change


@pytest.mark.parametrize("change, field", [
    (_set("thresholds", "Emphysema", value=float("nan")), "thresholds.Emphysema"),
    (_set("thresholds", "Emphysema", value=1.5), "thresholds.Emphysema"),
    (_set("thresholds", "Emphysema", value=None), "thresholds.Emphysema"),
    (lambda raw: raw["thresholds"].pop("Atelectasis"), "missing ['Atelectasis']"),
    (lambda raw: raw.update(thresholds=dict(reversed(list(raw["thresholds"].items())))), "another order"),
    (_set("workflow", "data", "labels", value=["Emphysema", "Cardiomegaly"]), "unknown ['Atelectasis']"),
    (_set("surprise", value=1), "surprise: unknown key"),
    (_set("workflow", "preprocessing", "hu_window", value=[1000, -1000]), "hu_window must be increasing"),
    (_set("workflow", "preprocessing", "spacing", value=[1000, 1, 1]), "workflow.preprocessing.spacing.0"),
    (_set("workflow", "network", "image_encoder", "embed_dim", value=10**9), "workflow.network.image_encoder.embed_dim"),
    (_set("ontology", "sha256", value="abc"), "ontology.sha256"),
])
def test_a_bad_field_is_one_line_naming_the_run_and_the_field(run, change, field):
    _edit(run, change)
    with pytest.raises(MedmmInputError) as info:
        load_checkpoint(run, "best")
    message = str(info.value)
    assert field in message and str(run / "medmm.json") in message and "\n" not in message


def test_an_oversized_medmm_json_is_refused_before_reading(run, monkeypatch):
    import medmm.models.run_meta as run_meta

    monkeypatch.setattr(run_meta, "MAX_META_BYTES", 100)
    with pytest.raises(MedmmInputError, match="at most 100"):
        read_run_meta(run)


def test_a_layout_without_schema_is_refused_with_the_fix(run):
    _edit(run, lambda raw: raw.pop("schema"))
    with pytest.raises(MedmmInputError, match="not 'medmm.run/2'; re-train it with `medmm train`"):
        read_run_meta(run)


def _as_v1(raw):
    """The medmm-run/1 layout of the same run (what medmm 0.1 training wrote)."""
    workflow = raw.pop("workflow")
    workflow["network"]["report_generator"]["vocab_ids"] = None
    workflow["network"]["image_encoder"]["global_pool"] = "avg"
    workflow["training"]["histogram_cache_mb"] = 2048
    raw.pop("schema")
    raw.pop("network_derived")
    raw.update(format="medmm-run/1", workflow=workflow, labels=workflow["data"]["labels"],
               preprocessing=workflow["preprocessing"], ontology_sha256=raw["ontology"]["sha256"],
               model=workflow["network"], text={"use_generated_report": True, "use_indication": True})


def test_a_v1_run_migrates_through_the_one_function(run, image):
    before, _ = load_checkpoint(run, "best")
    _edit(run, _as_v1)
    loaded, meta = load_checkpoint(run, "best")
    assert meta.labels == LABELS and meta.model_history[-1].action == "migrated"
    with torch.no_grad():
        assert torch.equal(loaded(image, ["a", "b"]), before(image, ["a", "b"]))


def test_a_v1_run_with_histograms_in_the_encoder_is_refused(run):
    def v1_with_histograms(raw):
        _as_v1(raw)
        raw["workflow"]["network"]["image_encoder"]["histogram_hu"] = [-1000, 0]

    _edit(run, v1_with_histograms)
    with pytest.raises(MedmmInputError, match="network.radiomics branch"):
        read_run_meta(run)
