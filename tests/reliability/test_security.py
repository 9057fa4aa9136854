"""Security: pickle checkpoints and YAML object tags are refused without running them; no PHI in
any output unless opted in; every DICOM medmm writes has a zeroed preamble."""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path

import pytest

from medmm.errors import MedmmConfigError, MedmmError


from .realrun import one_error_line, run_cli, shared_phi_scan, shared_run, write_phi_series


class Payload:
    """Unpickling this creates ``marker`` (a harmless stand-in for arbitrary code execution)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def run_template(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture
def run_dir(run_template, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run_template, dst)
    return dst


def test_payload_is_live(tmp_path):
    """Control: the payload really executes when unpickled, so its absence below means refusal."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


def _raw_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"weights": Payload(marker)}))


def _torch_save(path: Path, marker: Path) -> None:
    import torch

    torch.save({"state_dict": Payload(marker)}, path)  # zip container with a pickle inside


@pytest.mark.parametrize("write", [_raw_pickle, _torch_save], ids=["raw-pickle", "torch-save-zip"])
@pytest.mark.parametrize("loader", ["load_checkpoint", "load_model", "cli-infer", "cli-evaluate"])
def test_pickle_checkpoint_refused_without_executing(run_dir, tmp_path, capsys, write, loader):
    from medmm.inference import load_model
    from medmm.models import load_checkpoint

    marker = tmp_path / "pwned"
    write(run_dir / "best.safetensors", marker)
    if loader == "load_checkpoint":
        with pytest.raises(MedmmError):
            load_checkpoint(run_dir, "best")
    elif loader == "load_model":
        with pytest.raises(MedmmError):
            load_model(run_dir, device="cpu")
    else:
        scan, _ = write_phi_series(tmp_path / "scan")
        manifest = tmp_path / "m.csv"
        manifest.write_text("case_id,patient_id,image,report,indication,split\nc1,p1,scan,no findings,,test\n")
        argv = (["infer", str(scan), "--model", str(run_dir), "--out", str(tmp_path / "o"), "--device", "cpu"]
                if loader == "cli-infer" else
                ["evaluate", str(run_dir), "--data", str(manifest), "--out", str(tmp_path / "o"), "--n-bootstrap", "10"])
        code, out, err = run_cli(argv, capsys)
        assert code == 2 and "Traceback" not in err and one_error_line(err), err
    assert not marker.exists(), "pickle payload was executed"


def test_pt_pickle_next_to_no_safetensors_refused(run_dir, tmp_path):
    from medmm.inference import load_model

    marker = tmp_path / "pwned"
    (run_dir / "best.safetensors").unlink()
    _torch_save(run_dir / "best.pt", marker)
    _raw_pickle(run_dir / "model.pkl", marker)
    with pytest.raises(MedmmError):
        load_model(run_dir, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:builtins.open [{marker}, w]",
        "!!python/object/new:builtins.open [{marker}, w]",
        "!!python/name:os.system",
        "!!python/object:pathlib.PosixPath {{}}",
    ],
)
def test_yaml_python_tags_refused(tmp_path, tag):
    from medmm.config import load_workflow

    marker = tmp_path / "pwned"
    wf = tmp_path / "evil.yaml"
    wf.write_text(f"name: evil\nseed: {tag.format(marker=marker)}\n")
    with pytest.raises(MedmmConfigError) as info:
        load_workflow(wf)
    assert str(wf) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


# --------------------------------------------------------------------------------- PHI
@pytest.fixture(scope="module")
def phi_scan(tmp_path_factory):
    return shared_phi_scan(tmp_path_factory)


def _assert_clean(texts: dict[str, str], sentinels: list[str]) -> None:
    for where, text in texts.items():
        for s in sentinels:
            assert s not in text, f"PHI sentinel {s!r} leaked into {where}"


def _files(folder: Path) -> dict[str, str]:
    return {str(p): p.read_bytes().decode("latin-1") for p in sorted(folder.rglob("*")) if p.is_file()}


def test_no_phi_in_info(phi_scan, capsys, caplog):
    scan, sentinels = phi_scan
    caplog.set_level(logging.DEBUG, logger="medmm")
    for argv in (["info", str(scan)], ["info", str(scan), "--json"]):
        code, out, err = run_cli(argv, capsys)
        assert code == 0, err
        _assert_clean({"stdout": out, "stderr": err, "log": caplog.text}, sentinels)


def test_no_phi_in_info_error(tmp_path, phi_scan, capsys, caplog):
    """An error about a PHI-carrying file names the path, never its header values."""
    scan, sentinels = phi_scan
    bad = tmp_path / "bad"
    shutil.copytree(scan, bad)
    first = sorted(bad.iterdir())[0]
    first.write_bytes(first.read_bytes()[: 1200])  # truncated inside the pixel data
    caplog.set_level(logging.DEBUG, logger="medmm")
    code, out, err = run_cli(["info", str(bad)], capsys)
    _assert_clean({"stdout": out, "stderr": err, "log": caplog.text}, sentinels)


def test_no_phi_in_infer_outputs_unless_opted_in(run_template, phi_scan, tmp_path, capsys, caplog):
    scan, sentinels = phi_scan
    out = tmp_path / "out"
    caplog.set_level(logging.DEBUG, logger="medmm")
    code, stdout, err = run_cli(["infer", str(scan), "--model", str(run_template), "--out", str(out), "--device", "cpu",
                                 "--dicom-sr", "--fhir"], capsys)
    assert code == 0, err
    files = _files(out)
    assert any(f.endswith(".json") for f in files) and any(f.endswith(".html") for f in files)
    sr = {k: v for k, v in files.items() if k.endswith(".dcm")}
    assert sr, "no SR written"
    _assert_clean({"stdout": stdout, "stderr": err, "log": caplog.text, **files}, sentinels[:-3])
    _assert_clean({k: v for k, v in files.items() if k not in sr}, sentinels[-3:])  # no source UIDs in JSON/HTML

    kept = tmp_path / "kept"
    code, _, err = run_cli(["infer", str(scan), "--model", str(run_template), "--out", str(kept), "--device", "cpu",
                            "--dicom-sr", "--keep-phi"], capsys)
    assert code == 0, err
    sr = [p for p in kept.rglob("*.dcm")]
    assert sr and "SENTINEL" in sr[0].read_bytes().decode("latin-1"), "--keep-phi should copy the identity into the SR"


def test_no_phi_in_evaluate_outputs(run_template, phi_scan, tmp_path, capsys, caplog):
    scan, sentinels = phi_scan
    manifest = tmp_path / "manifest.csv"
    from medmm.labels import CT_RATE_FINDINGS

    header = "case_id,patient_id,image,report,indication,split," + ",".join(f'"{n}"' for n in CT_RATE_FINDINGS)
    rows = [f"c{i},SENTINELPID4711-{i},{scan},Emphysema. SENTINEL^PHINAME,,test," + ",".join(str((i + j) % 2) for j in range(18))
            for i in range(2)]
    manifest.write_text("\n".join([header, *rows]) + "\n")
    out = tmp_path / "eval"
    caplog.set_level(logging.DEBUG, logger="medmm")
    code, stdout, err = run_cli(["evaluate", str(run_template), "--data", str(manifest), "--out", str(out),
                                 "--n-bootstrap", "20"], capsys)
    assert code == 0, err
    assert (out / "metrics.json").exists()
    _assert_clean({"stdout": stdout, "stderr": err, "log": caplog.text, **_files(out)}, sentinels)


def test_deidentified_sr_has_no_source_uids(run_template, phi_scan, tmp_path, capsys):
    """Without --keep-phi the SR must not carry the source Study/Series/SOP Instance UIDs
    (DICOM PS3.15 Basic Profile replaces UIDs; they link the SR back to the identified study)."""
    scan, sentinels = phi_scan
    out = tmp_path / "out"
    code, _, err = run_cli(["infer", str(scan), "--model", str(run_template), "--out", str(out), "--device", "cpu",
                            "--dicom-sr"], capsys)
    assert code == 0, err
    _assert_clean({k: v for k, v in _files(out).items() if k.endswith(".dcm")}, sentinels[-3:])


def test_dicom_written_by_medmm_has_zeroed_preamble(run_template, phi_scan, tmp_path, capsys):
    scan, _ = phi_scan
    out = tmp_path / "out"
    code, _, err = run_cli(["infer", str(scan), "--model", str(run_template), "--out", str(out), "--device", "cpu",
                            "--dicom-sr"], capsys)
    assert code == 0, err
    written = [*scan.glob("*.dcm"), *out.rglob("*.dcm")]
    assert len(written) > 1
    for path in written:
        head = path.read_bytes()[:132]
        assert head[:128] == b"\0" * 128 and head[128:] == b"DICM", path.name
