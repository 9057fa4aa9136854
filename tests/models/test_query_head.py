"""Knowledge-initialised label queries and ontology group outputs in MedMM (issue 20 parts 1-2).

The text encoder is the tiny random BERT saved with ``save_pretrained`` (same code path as MiniLM).
"""

from __future__ import annotations

import shutil

import pytest
import torch

from medmm.config import PreprocessingConfig
from medmm.knowledge import load_ontology
from medmm.knowledge.ontology import default_ontology_path
from medmm.models import MedMM, derive_network, load_checkpoint, save_checkpoint
from medmm.models.query_head import KnowledgeQueryHead, label_query_embeddings

from .conftest import meta_for

LABELS = ["Lung opacity", "Consolidation", "Pleural effusion", "Cardiomegaly"]
NEW_CONCEPTS = """
ct:GroundGlassOpacity a owl:Class , skos:Concept ;
    rdfs:subClassOf ct:LungOpacity ;
    skos:prefLabel "Ground-glass opacity" ;
    skos:definition "Hazy increased lung attenuation through which vessels and bronchial walls stay visible." ;
    skos:altLabel "GGO" , "ground glass" .
ct:FluidCollection a owl:Class , skos:Concept ;
    rdfs:subClassOf ct:ChestCTFinding ;
    skos:prefLabel "Fluid collection" ;
    skos:definition "Fluid in a serous cavity of the chest." .
ct:PleuralEffusion rdfs:subClassOf ct:FluidCollection .
"""


def _build(tiny_config, onto, labels, *, hierarchy=True, head="knowledge_queries", use_text=False, seed=0):
    cfg = tiny_config(fusion={"use_text": use_text, "head": head})
    cfg = type(cfg).model_validate({**cfg.model_dump(), "hierarchy": {} if hierarchy else None})
    derived = derive_network(cfg, PreprocessingConfig(), ontology=onto, labels=labels)
    emb = label_query_embeddings(derived.label_query_texts, cfg.text_encoder) if derived.label_query_texts else None
    torch.manual_seed(seed)
    return MedMM(cfg, labels, derived, emb), derived, emb


def _step(model, image, **kw):
    with torch.no_grad():
        return model.predict_step(image, generate=False, use_generated_report=False, use_indication=False, **kw)


def test_query_head_shapes_and_initial_queries(tiny_config, image):
    onto = load_ontology()
    model, derived, emb = _build(tiny_config, onto, LABELS)
    groups = ["Cardiovascular finding", "Lung parenchyma finding", "Pleural finding", "Chest CT finding"]
    assert derived.hierarchy_groups == groups and model.output_names == LABELS + groups
    assert isinstance(model.fusion, KnowledgeQueryHead)
    assert derived.label_query_texts[1].startswith("Consolidation. Replacement of alveolar air")
    assert "Also: " in derived.label_query_texts[1]
    assert emb.shape == (8, derived.label_query_dim) and torch.equal(model.fusion.label_embeddings, emb)
    assert not torch.allclose(emb[0], emb[2])  # different concepts start from different queries
    out = _step(model, image)
    assert out.logits.shape == (2, 4) and out.group_logits.shape == (2, 4) and out.raw_logits.shape == (2, 8)
    probs = torch.sigmoid(torch.cat([out.logits, out.group_logits], 1))
    assert bool((probs[:, 1] <= probs[:, 0]).all())  # Consolidation => Lung opacity by construction
    assert bool((probs[:, :7] <= probs[:, 7:8]).all())  # everything => any abnormality


def test_query_head_reads_text_when_fusion_does(tiny_config, image):
    model, _, _ = _build(tiny_config, load_ontology(), LABELS, hierarchy=False, use_text=True)
    out = model.predict_step(image, ["cough", None], use_generated_report=False, generate=False)
    assert out.logits.shape == (2, 4) and out.group_logits is None and out.raw_logits is None


def test_checkpoint_round_trip_needs_no_text_encoder(tiny_config, image, tmp_path, monkeypatch):
    model, _, _ = _build(tiny_config, load_ontology(), LABELS)
    with torch.no_grad():
        model.fusion.query_delta.add_(0.1)  # "trained" weights differ from a fresh model
    expected = _step(model.eval(), image)
    save_checkpoint(model, tmp_path, "best", meta_for(model))

    def no_encoder(*_a, **_k):
        raise AssertionError("loading must not run the text encoder")

    monkeypatch.setattr("medmm.models.query_head._embed", no_encoder)
    monkeypatch.setattr("medmm.models.medmm.TextEncoder", no_encoder)
    loaded, meta = load_checkpoint(tmp_path, "best")
    got = _step(loaded, image)
    assert meta.network_derived.hierarchy_groups == model.derived.hierarchy_groups
    assert torch.equal(got.logits, expected.logits) and torch.equal(got.group_logits, expected.group_logits)
    assert torch.equal(loaded.fusion.label_embeddings, model.fusion.label_embeddings)


def test_default_head_is_unchanged(tiny_config, image):
    model, derived, emb = _build(tiny_config, load_ontology(), LABELS, hierarchy=False, head="fusion")
    assert emb is None and derived.hierarchy_groups is None and derived.label_query_texts is None
    assert model.output_names == LABELS and model.hierarchy is None
    out = _step(model, image)
    assert out.logits.shape == (2, 4) and out.group_logits is None


def test_a_new_child_concept_is_picked_up_without_code(tiny_config, image, tmp_path):
    """Copy the bundled ontology, add a subtype of a finding and a new group: hierarchy, outputs and
    queries follow the file."""
    path = tmp_path / "chest_ct_plus.ttl"
    shutil.copy(default_ontology_path(), path)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(NEW_CONCEPTS)
    onto = load_ontology(path)
    labels = [*LABELS, "Ground-glass opacity"]
    model, derived, emb = _build(tiny_config, onto, labels)
    base, base_derived, _ = _build(tiny_config, load_ontology(), LABELS)

    assert "Fluid collection" in derived.hierarchy_groups and "Fluid collection" not in base_derived.hierarchy_groups
    assert derived.hierarchy_groups[-1] == "Chest CT finding"
    lines = set(model.hierarchy.describe())
    assert {"Ground-glass opacity ⇒ Lung opacity", "Ground-glass opacity ⇒ Lung parenchyma finding",
            "Pleural effusion ⇒ Fluid collection", "Fluid collection ⇒ Chest CT finding"} <= lines
    names = model.output_names
    assert len(names) == len(base.output_names) + 2
    text = derived.label_query_texts[names.index("Ground-glass opacity")]
    assert text.startswith("Ground-glass opacity. Hazy increased lung attenuation") and "GGO" in text
    assert derived.label_query_texts[names.index("Fluid collection")].startswith("Fluid collection. Fluid in a serous")
    assert emb.shape[0] == len(names)

    out = _step(model, image)
    probs = dict(zip(names, torch.sigmoid(torch.cat([out.logits, out.group_logits], 1)).T))
    assert bool((probs["Ground-glass opacity"] <= probs["Lung opacity"]).all())
    assert bool((probs["Pleural effusion"] <= probs["Fluid collection"]).all())


def test_hierarchy_needs_its_derived_outputs(tiny_config):
    from medmm.errors import MedmmConfigError

    cfg = type(tiny_config()).model_validate({**tiny_config().model_dump(), "hierarchy": {}})
    with pytest.raises(MedmmConfigError, match="derived group outputs"):
        MedMM(cfg, LABELS)
    with pytest.raises(MedmmConfigError, match="ontology and labels"):
        derive_network(cfg, PreprocessingConfig())
