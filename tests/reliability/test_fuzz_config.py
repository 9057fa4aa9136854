"""Fuzz (hypothesis) of what a user or a tampered run dir can hand medmm: workflow overrides
(`--set key=value`) and every field of a run's `medmm.json`. Whatever the value — NaN, infinities,
huge numbers, wrong types, nested junk — the outcome is a valid config or one `MedmmConfigError` /
`MedmmInputError` line, never another exception and never a hang (each example is timed)."""

from __future__ import annotations

import copy
import json
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medmm.config import load_workflow
from medmm.errors import MedmmConfigError, MedmmInputError
from medmm.models.run_meta import validate_run_meta

MINIMAL = {"preprocessing": {"roi_size": [16, 16, 16]}}
PER_EXAMPLE_S = 5.0

# Keys a user sets with --set (every numeric or path field the red team tried, and their neighbours).
KEYS = [
    "optimizer.lr", "optimizer.weight_decay", "preprocessing.hu_window", "preprocessing.spacing",
    "preprocessing.roi_size", "inferer.roi_size", "inferer.overlap", "inferer.sw_batch_size",
    "network.image_encoder.embed_dim", "data.synthetic.n", "data.synthetic.size", "training.batch_size",
    "training.epochs", "training.label_fraction", "output.run_root", "data.synthetic.cache_dir", "seed",
    "loss.kr_weight", "loss.lm_weight", "training.adversarial.eps_hu", "network.report_generator.n_layer",
]

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([0, -1, 1e309, -1e309, 1e-9, 1e11, 10**9, 0.999]),
)
values = st.one_of(
    numbers,
    st.lists(numbers, min_size=0, max_size=4),
    st.text(max_size=12),
    st.sampled_from(["../../../../etc", "/etc", "/usr/lib", ".nan", ".inf", "null", "[]", "{}"]),
    st.booleans(),
    st.none(),
)


def _yaml_value(value) -> str:
    """How a user would type the value after `key=` (YAML flow syntax)."""
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    if isinstance(value, float) and math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    return json.dumps(value, allow_nan=False) if not isinstance(value, str) else value


def _timed(fn):
    start = time.perf_counter()
    try:
        return fn()
    finally:
        assert time.perf_counter() - start < PER_EXAMPLE_S, "validation took too long"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(KEYS), value=values)
def test_workflow_overrides_never_escape_as_tracebacks(key, value):
    try:
        _yaml_value(value)
    except ValueError:
        return
    override = f"{key}={_yaml_value(value)}"
    try:
        _timed(lambda: load_workflow(copy.deepcopy(MINIMAL), [override]))
    except MedmmConfigError as err:
        assert "\n" not in str(err) and str(err)


@pytest.fixture(scope="module")
def stored_meta(tmp_path_factory):
    """A real run's medmm.json (the shared tiny run of the reliability corpus)."""
    from .realrun import shared_run

    return json.loads((shared_run(tmp_path_factory) / "medmm.json").read_text())


def _paths(node, prefix=()):
    """Every (path, leaf) of a JSON document, lists included."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, prefix + (key,))
    elif isinstance(node, list) and node:
        for i, child in enumerate(node[:4]):
            yield from _paths(child, prefix + (i,))
    else:
        yield prefix


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.data(), value=values)
def test_tampered_run_metadata_is_refused_in_one_line(stored_meta, data, value, tmp_path):
    paths = list(_paths(stored_meta))
    path = data.draw(st.sampled_from(paths))
    raw = copy.deepcopy(stored_meta)
    node = raw
    for key in path[:-1]:
        node = node[key]
    if path:
        node[path[-1]] = value
    try:
        _timed(lambda: validate_run_meta(raw, tmp_path / "medmm.json"))
    except (MedmmInputError, MedmmConfigError) as err:
        assert "\n" not in str(err) and str(err)
