"""Fuzzing hostile input files (issue 21): random damage to valid zip / NIfTI / DICOM inputs.

Whatever hypothesis does to the bytes (flips, truncation, inserted junk, patched header fields),
``load_volume`` and ``medmm info`` end in a `Volume` or one `MedmmInputError` line, within a time
bound - never another exception type, never a hang. (Run-dir and workflow fuzzing: see i15's tests.)
"""

from __future__ import annotations

import signal
import struct
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.dicom_cases import make_hu, write_series
from medmm.errors import MedmmInputError
from medmm.io import Volume, load_volume
from medmm.io.writers import write_nifti

from .realrun import one_error_line, run_cli

SECONDS_PER_EXAMPLE = 20
HU = make_hu()


@contextmanager
def time_limit(seconds: int):
    """Fail (instead of hanging the suite) when one example runs longer than ``seconds``."""

    def boom(signum, frame):
        raise TimeoutError(f"input took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _bases(root: Path) -> dict[str, tuple[Path, bytes]]:
    files = write_series(root / "series", HU)
    zpath = root / "scan.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f"scan/{f.name}")
    nii = write_nifti(HU, np.diag([0.8, 0.9, 2.0, 1.0]), root / "scan.nii")
    niigz = write_nifti(HU, np.diag([0.8, 0.9, 2.0, 1.0]), root / "scan.nii.gz")
    return {
        "zip": (zpath, zpath.read_bytes()),
        "nii": (nii, nii.read_bytes()),
        "nii.gz": (niigz, niigz.read_bytes()),
        "dicom_slice": (files[3], files[3].read_bytes()),
    }


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return _bases(tmp_path_factory.mktemp("fuzz_bases"))


damage = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=12)),
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("insert"), st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=64))),
    # header integers set to extremes: sizes, dims, offsets, lengths
    st.tuples(st.just("int"), st.tuples(st.integers(0, 600), st.sampled_from([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF,
                                                                             0xFFFFFFFF, 30000]))),
)


def _apply(data: bytes, how) -> bytes:
    kind, arg = how
    raw = bytearray(data)
    if kind == "flip":
        for pos, mask in arg:
            raw[pos % len(raw)] ^= mask
    elif kind == "truncate":
        raw = raw[: int(len(raw) * arg)]
    elif kind == "insert":
        pos, junk = arg
        raw[pos % (len(raw) + 1): pos % (len(raw) + 1)] = junk
    else:
        pos, value = arg
        pos = min(pos, max(0, len(raw) - 4))
        struct.pack_into("<I", raw, pos, value & 0xFFFFFFFF)
    return bytes(raw)


def _write(target: Path, data: bytes, kind: str, base: Path) -> Path:
    if kind == "dicom_slice":  # a damaged slice inside an otherwise valid series folder
        folder = target / "series"
        folder.mkdir(parents=True, exist_ok=True)
        for f in base.parent.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        (folder / base.name).write_bytes(data)
        return folder
    target.mkdir(parents=True, exist_ok=True)
    path = target / base.name
    path.write_bytes(data)
    return path


_COUNTER = iter(range(10**9))


@pytest.mark.parametrize("kind", ["zip", "nii", "nii.gz", "dicom_slice"])
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(how=damage)
def test_damaged_input_loads_or_fails_cleanly(bases, tmp_path, kind, how):
    base, data = bases[kind]
    path = _write(tmp_path / f"ex{next(_COUNTER)}", _apply(data, how), kind, base)
    with time_limit(SECONDS_PER_EXAMPLE):
        try:
            vol = load_volume(path)
        except MedmmInputError as err:
            text = str(err)
            assert "\n" not in text and (path.name in text or str(path) in text), text
            return
    assert isinstance(vol, Volume) and vol.array.dtype == np.float32 and vol.array.ndim == 3


@pytest.mark.parametrize("kind", ["zip", "nii.gz"])
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(how=damage)
def test_damaged_input_through_medmm_info(bases, tmp_path, capsys, kind, how):
    base, data = bases[kind]
    path = _write(tmp_path / f"cli{next(_COUNTER)}", _apply(data, how), kind, base)
    with time_limit(SECONDS_PER_EXAMPLE):
        code, out, err = run_cli(["info", str(path)], capsys)
    assert "Traceback" not in err
    assert code == 0 or (code == 2 and one_error_line(err)), err
