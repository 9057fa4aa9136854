"""Fixtures of the full-size smoke runs: a CT-RATE-shaped data set, its prepared cache, a 1-step run.

Session-scoped fixtures (re-exported by conftest.py) let the CPU and GPU smoke tests build the
512 × 512 × 200-300 volumes once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from medmm.cli import main
from medmm.data.synth.ctrate_layout import ctrate_names, write_ctrate_layout

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "ct_chest.yaml"
SHAPES = [(512, 512, 240), (512, 512, 280)]
WALL: dict[str, float] = {}


def timed_cli(name: str, argv: list[str]) -> float:
    """Run ``medmm ARGV`` in-process, fail on a non-zero exit, print and return the wall time."""
    start = time.perf_counter()
    try:
        main(argv)
    except SystemExit as done:
        assert done.code in (0, None), f"medmm {' '.join(argv[:2])} exited with {done.code}"
    WALL[name] = time.perf_counter() - start
    print(f"\n[full-size smoke] {name}: {WALL[name]:.1f} s wall")
    return WALL[name]


def overrides(ctrate: dict[str, Path], **extra) -> list[str]:
    """``--set`` arguments pointing ct_chest.yaml at the fixture and limiting it to one step."""
    values = {"data.source": "ctrate", "data.ctrate.volumes_dir": ctrate["volumes_dir"],
              "data.ctrate.labels_csv": ctrate["labels_csv"], "data.ctrate.reports_csv": ctrate["reports_csv"],
              "data.val_fraction": 0.5, "training.cache_dir": ctrate["root"] / "cache",
              "training.epochs": 1, "training.batch_size": 1, "training.grad_accum": 1, "training.num_workers": 0,
              **extra}
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


@pytest.fixture(scope="session")
def ctrate(tmp_path_factory) -> dict[str, Path]:
    """Two phantoms (512 × 512 × 240 and × 280) in CT-RATE's folder and CSV layout."""
    root = tmp_path_factory.mktemp("ctrate_full")
    start = time.perf_counter()
    paths = write_ctrate_layout(root, ctrate_names(len(SHAPES)), shape=SHAPES)
    WALL["fixture"] = time.perf_counter() - start
    print(f"\n[full-size smoke] fixture ({len(SHAPES)} volumes {SHAPES}): {WALL['fixture']:.1f} s wall")
    return {**paths, "root": root}


@pytest.fixture(scope="session")
def prepared(ctrate) -> Path:
    """The fixture's prepared cache (``medmm data prepare --workers 2``)."""
    timed_cli("data prepare (2 workers)", ["data", "prepare", str(WORKFLOW), *overrides(ctrate), "--workers", "2",
                                           "--quiet"])
    return ctrate["root"] / "cache"
