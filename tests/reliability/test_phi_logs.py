"""Class 7 of issue 21: no PHI and no log injection on stderr, in errors or from libraries.

* library warnings (pydicom quotes every invalid source UID it meets) are captured, de-identified
  and shown once;
* errors never echo free-text DICOM fields (SeriesDescription);
* every error is one line: a path or value holding a newline, CR or ANSI escape cannot forge a
  second ``error:`` line;
* an empty path is refused instead of meaning "the current folder".
"""

from __future__ import annotations

import pytest

from fixtures.dicom_cases import make_hu, series_datasets, write_series
from medmm.errors import MedmmConfigError, MedmmInputError
from medmm.io import load_volume
from medmm.io.writers import save_datasets

from .realrun import AFFINE, PHI, one_error_line, phantom, run_cli

SENTINEL_DESC = "SENTINEL^DESC Doe John 1962-03-04"


def _forged(stderr: str) -> bool:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return len(lines) != 1 or sum(ln.startswith("error:") for ln in lines) != 1


# ------------------------------------------------------------------ library warnings
def _bad_uid_series(folder, n_marker="SENTINEL"):
    """A body phantom series whose SOP Instance UIDs are invalid (pydicom warns, quoting them)."""
    from medmm.io.writers import build_dicom_series

    datasets = build_dicom_series(phantom(), AFFINE, series_description="chest", uid_seed="bad-uids", **PHI)
    uids = []
    for k, ds in enumerate(datasets):
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.0{k:02d}77.{n_marker}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        uids.append(ds.SOPInstanceUID)
    save_datasets(datasets, folder)
    return folder, uids


@pytest.fixture
def plain_warnings():
    """Python's own warning display (to stderr), as outside pytest, which otherwise collects them."""
    import sys
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def test_pydicom_warnings_with_source_uids_are_deidentified_on_stderr(tmp_path, capsys, cached_model, plain_warnings):
    scan, uids = _bad_uid_series(tmp_path / "scan")
    capsys.readouterr()  # building the series warns too (pydicom, in this test): not medmm's output
    code, out, err = run_cli(["infer", str(scan), "--model", "m", "--out", str(tmp_path / "o"), "--dicom-sr",
                              "--fhir", "-q", "--device", "cpu"], capsys)
    assert code == 0, err
    for uid in uids:
        assert uid not in err and uid.split(".SENT")[0] not in err
    assert "SENTINEL" not in err
    warning_lines = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warning_lines) <= 5, f"{len(warning_lines)} warning lines: one per distinct message expected"


def test_pydicom_warnings_deidentified_in_info(tmp_path, capsys, plain_warnings):
    scan, uids = _bad_uid_series(tmp_path / "scan")
    capsys.readouterr()  # building the series warns too (pydicom, in this test): not medmm's output
    code, out, err = run_cli(["info", str(scan)], capsys)
    assert code == 0, err
    assert not any(uid in out + err for uid in uids)


def test_capture_deidentifies_python_warnings_and_library_logs():
    import logging
    import warnings

    from medmm.io.capture import library_warnings_deidentified

    lines = []
    with library_warnings_deidentified(echo=lines.append):
        for _ in range(3):
            warnings.warn("Invalid value for VR UI: '1.2.840.113619.2.55.3.4' of patient 'DOE^JOHN'")
        logging.getLogger("pydicom").warning("Invalid value for VR DA: 19620304")
    text = "\n".join(lines)
    assert "1.2.840" not in text and "DOE" not in text and "19620304" not in text
    assert len(lines) == 2 and "(x3)" in lines[0]


@pytest.mark.parametrize("message", [
    "uid 1.2.826.0.1.3680043.8.498.12345 in file", "name 'Smith^Anna'", 'id "PID-4711"', "date 20230405",
    "2.25.329800735698586629295641978511506172918",
])
def test_deidentify_removes_identifiers(message):
    from medmm.io.capture import deidentify

    out = deidentify(message)
    for token in ("1.2.826", "Smith", "PID-4711", "20230405", "2.25.3298"):
        assert token not in out


# ------------------------------------------------------------------ free text in errors
def _two_series_with_phi_descriptions(root):
    write_series(root / "a", make_hu(seed=1), uid_seed="a", description=SENTINEL_DESC)
    write_series(root / "b", make_hu(seed=2), uid_seed="b", description="Anna Smith follow-up 2019")
    return root


@pytest.mark.parametrize("command", ["info", "infer"])
def test_several_series_error_has_no_series_description(tmp_path, capsys, cached_model, command):
    root = tmp_path / "study"
    src = _two_series_with_phi_descriptions(root)
    # a folder of series folders is a batch for `infer`; one folder holding both series is not
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in src.rglob("*.dcm"):
        (flat / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    argv = ["info", str(flat)] if command == "info" else ["infer", str(flat), "--model", "m", "--out",
                                                          str(tmp_path / "o"), "-q"]
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and one_error_line(err) and "2 CT/MR series" in err, err
    for token in ("SENTINEL", "Doe", "John", "1962", "Anna", "Smith", "2019"):
        assert token not in err


def test_unmatched_series_error_has_no_series_description(tmp_path):
    root = _two_series_with_phi_descriptions(tmp_path / "study")
    with pytest.raises(MedmmInputError) as info:
        load_volume(root, series="999999")
    assert "SENTINEL" not in str(info.value) and "Smith" not in str(info.value)


def test_modality_text_in_error_is_single_line(tmp_path):
    """A non-image DICOM object whose Modality holds a newline and a forged error line."""
    datasets = series_datasets(make_hu(), uid_seed="forge")
    ds = datasets[0]
    for keyword in ("Rows", "Columns", "PixelData", "BitsAllocated"):
        delattr(ds, keyword)
    ds.Modality = "SR\nerror: forged"
    files = save_datasets([ds], tmp_path / "obj")
    with pytest.raises(MedmmInputError) as info:
        load_volume(files[0])
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ log injection
@pytest.mark.parametrize("name", ["scan\nerror: forged line", "scan\rerror: overwritten", "scan\x1b[2Jclear",
                                  "tab\there", "nul-free\u2028separator", "bell\x07"])
@pytest.mark.parametrize("command", ["info", "infer", "evaluate"])
def test_control_characters_in_paths_give_one_escaped_line(tmp_path, capsys, cached_model, name, command):
    path = tmp_path / name  # does not exist
    argv = {"info": ["info", str(path)],
            "infer": ["infer", str(path), "--model", "m", "--out", str(tmp_path / "o")],
            "evaluate": ["evaluate", str(path), "--data", str(path), "--out", str(tmp_path / "o")]}[command]
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and not _forged(err), repr(err)
    assert "\x1b" not in err and "\r" not in err and "\x07" not in err


def test_existing_folder_with_newline_in_its_name(tmp_path, capsys):
    folder = tmp_path / "notes\nerror: all is fine"
    folder.mkdir()
    (folder / "readme.txt").write_text("not dicom")
    code, out, err = run_cli(["info", str(folder)], capsys)
    assert code == 2 and not _forged(err), repr(err)
    assert "notes\\nerror" in err


def test_error_objects_are_one_line_for_the_api():
    err = MedmmInputError("/data/a\nb", "bad\nthing\x1b[31m")
    assert "\n" not in str(err) and "\x1b" not in str(err) and str(err).startswith("/data/a\\nb")
    cfg = MedmmConfigError("wf.yaml\n", "x\ry")
    assert "\n" not in str(cfg) and "\r" not in str(cfg)


def test_option_value_with_newline_cannot_forge_lines(tmp_path, capsys):
    code, out, err = run_cli(["infer", str(tmp_path), "--model", "m", "--device", "cuda\nerror: forged"], capsys)
    assert code == 2 and sum(ln.startswith("error:") for ln in err.splitlines()) == 1, err


# ------------------------------------------------------------------ empty paths
@pytest.mark.parametrize("argv", [
    ["infer", "", "--model", "m"],
    ["infer", "   ", "--model", "m"],
    ["infer", "{scan}", "--model", ""],
    ["infer", "{scan}", "--model", "m", "--out", ""],
    ["info", ""],
    ["evaluate", "", "--data", "x.csv"],
    ["evaluate", "{scan}", "--data", ""],
])
def test_empty_path_is_refused(tmp_path, capsys, monkeypatch, cached_model, argv):
    scan = tmp_path / "scan"
    write_series(scan, make_hu())
    monkeypatch.chdir(scan)  # "" must not mean this folder (it holds a valid series)
    code, out, err = run_cli([a.format(scan=scan) for a in argv], capsys)
    assert code == 2 and one_error_line(err) and "empty path" in err, err
    assert not (tmp_path / "scan" / "result.json").exists()


def test_api_refuses_empty_path():
    with pytest.raises(MedmmInputError, match="no input path"):
        load_volume("")
