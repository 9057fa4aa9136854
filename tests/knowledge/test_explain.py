"""Explanations of findings."""

from __future__ import annotations

import torch

from medmm.knowledge import explain_finding, make_consistent
from medmm.labels import CT_RATE_FINDINGS


def test_explain_with_repairs(onto):
    c = onto.constraints(CT_RATE_FINDINGS)
    probs = torch.full((1, len(CT_RATE_FINDINGS)), 0.1)
    probs[0, CT_RATE_FINDINGS.index("Consolidation")] = 0.8
    repairs = make_consistent(probs, c).repairs[0]
    info = explain_finding(onto, "Lung opacity", repairs, labels=CT_RATE_FINDINGS)
    assert info["path"] == ["Lung opacity", "Lung parenchyma finding", "Chest CT finding"]
    assert info["implied_by"] == ["Consolidation"] and info["excludes"] == []
    assert [(r["constraint"], r["before"] < r["after"]) for r in info["repairs"]] == [
        ("Consolidation ⇒ Lung opacity", True)]
    assert {"system": "RadLex", "code": "RID28530"}.items() <= info["codes"][0].items()
    assert explain_finding(onto, "Emphysema", repairs)["repairs"] == []


def test_explain_default_pool_includes_normal_class(onto):
    info = explain_finding(onto, "Emphysema")
    assert info["excludes"] == ["No abnormality"] and info["site"] == "Lung"
    assert "centrilobular" in info["definition"]
