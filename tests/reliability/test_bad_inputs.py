"""Run the bad-input corpus through ``load_volume`` and ``medmm info``.

Each input either loads (with the asserted shape/values) or fails with a one-line
`MedmmInputError` naming the input — and the CLI prints that line and exits 2. Never a traceback,
never another exception type, never planted PHI in any output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medmm.cli import main
from medmm.errors import MedmmInputError
from medmm.io import Volume, load_volume
from reliability.corpus import CORPUS, PHI_STRINGS, CorpusCase

MIN_CORPUS_SIZE = 35


def _no_phi(text: str) -> None:
    for phi in PHI_STRINGS:
        assert phi not in text, f"planted PHI {phi!r} leaked: {text[:200]!r}"


def _input_named(message: str, path: Path) -> None:
    assert "\n" not in message.strip(), message
    assert str(path) in message or path.name in message, message


def test_corpus_is_large_enough():
    assert len(CORPUS) >= MIN_CORPUS_SIZE
    assert len({c.name for c in CORPUS}) == len(CORPUS)
    assert sum(c.expect.outcome == "error" for c in CORPUS) >= 25


def _check_volume(case: CorpusCase, vol: Volume) -> None:
    assert isinstance(vol, Volume)
    assert vol.array.dtype == np.float32 and np.isfinite(vol.array).all()
    if case.expect.shape is not None:
        assert vol.shape == case.expect.shape
    if case.expect.check is not None:
        case.expect.check(vol)
    _no_phi(repr(vol) + repr(vol.meta) + " ".join(map(str, vol.meta.get("warnings", []))))


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_load_volume(tmp_path, case):
    path = case.build(tmp_path / "case")
    expect = case.expect
    try:
        vol = load_volume(path)
    except MedmmInputError as err:
        assert expect.outcome in ("error", "either"), f"{case.name} should load but: {err}"
        _input_named(str(err), path)
        _no_phi(str(err))
        if expect.message:
            assert expect.message in err.reason, err.reason
        return
    assert expect.outcome in ("volume", "either"), f"{case.name} should fail but loaded {vol!r}"
    _check_volume(case, vol)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_medmm_info(tmp_path, capsys, case):
    path = case.build(tmp_path / "case")
    try:
        main(["info", str(path)])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    _no_phi(text)
    if code == 0:
        assert case.expect.outcome in ("volume", "either"), f"{case.name}: info succeeded: {out.out}"
        if case.expect.shape:
            assert " x ".join(map(str, case.expect.shape)) in out.out
        return
    assert code == 2, f"{case.name}: exit {code}: {text[-300:]}"
    assert case.expect.outcome in ("error", "either"), f"{case.name}: {out.err}"
    assert out.err.startswith("error: ") and out.err.count("\n") == 1, out.err
    _input_named(out.err, path)
    if case.expect.message:
        assert case.expect.message in out.err
