"""Training and inference with ontology group outputs (C-HMCNN) and knowledge queries (issue 20)."""

from __future__ import annotations

import jsonschema
import numpy as np
import pytest
import torch
from training_helpers import TINY_LABELS, tiny_workflow

from medmm.inference.schema import RESULT_JSON_SCHEMA
from medmm.training import train

pytestmark = pytest.mark.slow


def test_hierarchy_and_knowledge_queries_train_predict_and_report_groups(tiny_manifest, tmp_path):
    wf = tiny_workflow(tiny_manifest, **{"network.hierarchy": {}, "network.fusion.head": "knowledge_queries",
                                         "network.fusion.use_text": False, "loss.lm_weight": 0.0,
                                         "training.text": {"use_generated_report": False, "use_indication": False}})
    run = train(wf, run_dir=tmp_path / "run", verbose=False)
    meta = run.meta
    groups = meta.network_derived.hierarchy_groups
    # Pleural effusion, Lung nodule, Emphysema -> their groups and the "any abnormality" root
    assert groups == ["Lung parenchyma finding", "Pleural finding", "Chest CT finding"]
    assert len(meta.network_derived.label_query_texts) == len(TINY_LABELS) + len(groups)
    assert np.isfinite(run.metrics[-1]["train_bce"])

    from medmm.inference import load_model

    predictor = load_model(run.run_dir, device="cpu")
    image = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0)) * 1400 - 1000
    from medmm.io import Volume

    result = predictor.predict(Volume(image[0, 0].numpy(), np.diag([1.5, 1.5, 1.5, 1.0])), force=True)
    doc = result.to_dict()
    jsonschema.validate(doc, RESULT_JSON_SCHEMA)
    by_group = {row["group"]: row for row in doc["groups"]}
    assert list(by_group) == groups and by_group["Chest CT finding"]["findings"] == TINY_LABELS
    probs = {row["finding"]: row["probability"] for row in doc["findings"]}
    for row in doc["groups"]:
        assert row["probability"] >= max(probs[f] for f in row["findings"])
