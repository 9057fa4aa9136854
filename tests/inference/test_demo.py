"""`medmm demo` end to end on a shrunken demo workflow; a second call reuses the finished run."""

from __future__ import annotations

import pytest

from medmm.cli import main

pytestmark = pytest.mark.slow

SMALL = [
    "data.synthetic.n=8",
    "data.synthetic.size=32",
    "training.epochs=1",
    "training.batch_size=4",
    "preprocessing.roi_size=[32,32,32]",
    "network.image_encoder.widths=[8,8,8,16]",
    "network.image_encoder.depth=[1,1,1,1]",
    "network.image_encoder.embed_dim=32",
    "network.report_generator.n_layer=1",
    "network.report_generator.n_embd=32",
    "network.report_generator.max_new_tokens=16",
    "network.fusion.hidden=16",
]


def test_demo_trains_then_reuses(tmp_path, capfd):
    args = ["demo", "--out", str(tmp_path / "demo"), "--device", "cpu"]
    for item in SMALL:
        args += ["--set", item]
    main(args)
    out = capfd.readouterr().out
    assert "[2/3] training" in out and "Generated report:" in out and "report.html" in out
    (case_dir,) = (tmp_path / "demo" / "infer").iterdir()
    assert {p.name for p in case_dir.iterdir()} == {"result.json", "report.html", "report_sr.dcm", "fhir.json"}

    main(args)
    assert "[2/3] reusing the finished run" in capfd.readouterr().out
