"""``medmm info``: what would be loaded, no PHI, one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from fixtures.dicom_cases import PHI_STRINGS, make_hu, write_series
from medmm.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``medmm`` in-process; return (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_info_prints_summary_without_phi(tmp_path, capsys):
    write_series(tmp_path / "scan", make_hu(), description="chest 2mm")
    code, out, err = run_cli(capsys, "info", str(tmp_path / "scan"))
    assert code == 0, err
    for needle in ("CT", "10 x 12 x 8", "0.8 x 0.9 x 2", "LPS", "HU range", "chest 2mm", "dicom"):
        assert needle in out
    for phi in PHI_STRINGS:
        assert phi not in out + err


def test_info_json_and_series_option(tmp_path, capsys):
    write_series(tmp_path / "a", make_hu(seed=1), uid_seed="a", description="first")
    write_series(tmp_path / "b", make_hu((6, 6, 5), seed=2), uid_seed="b", description="second")
    code, out, err = run_cli(capsys, "info", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    # candidates are told apart by UID suffix, modality, slices and matrix; never by the free-text
    # SeriesDescription (it may hold PHI, and the PS3.15 Basic Profile removes it)
    assert "8 slices 12x10" in err and "5 slices 6x6" in err
    assert "first" not in err and "second" not in err
    from medmm.io import list_series

    suffix = next(s.uid_suffix for s in list_series(tmp_path) if s.description == "second")
    code, out, err = run_cli(capsys, "info", str(tmp_path), "--series", suffix, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["shape"] == [6, 6, 5] and summary["modality"] == "CT" and len(summary["series"]) == 2
    for phi in PHI_STRINGS:
        assert phi not in out


@pytest.mark.parametrize("make", ["missing", "empty-dir", "text-file"])
def test_info_errors_are_one_line_exit_2(tmp_path, capsys, make):
    target = tmp_path / "input"
    if make == "empty-dir":
        target.mkdir()
    elif make == "text-file":
        target.write_text("hello")
    code, out, err = run_cli(capsys, "info", str(target))
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and str(target) in err
    assert "Traceback" not in out + err
