"""DICOM round trip with a real PACS: Orthanc C-STOREs a series to medmm, medmm C-STOREs the SR back.

Orthanc (Debian package ``orthanc``; ``.ci/run`` installs it) runs on loopback ports with a
temporary configuration and storage. The series carries PHI sentinels: they must come back in the
SR filed in Orthanc (same patient, same study) and must appear nowhere medmm writes by default —
log, metrics, audit log, stored outputs. With the DICOMweb plugin (``orthanc-dicomweb``) the SR
is also pulled by StudyInstanceUID with ``dicomweb-client``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from serving import SENTINELS, free_port, phi_series, start_server, wait_for

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")  # Debian package orthanc-dicomweb
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(ORTHANC is None, reason="Orthanc binary missing: apt-get install orthanc (.ci/run does)")]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    import httpx

    root = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port, medmm_port = free_port(), free_port(), free_port()
    config = {
        "Name": "medmm-test", "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
        "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.is_file() else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "DicomModalities": {"medmm": ["MEDMM", "127.0.0.1", medmm_port]},
        "HttpBindAddress": "127.0.0.1", "DicomScuTimeout": 30,
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log = (root / "orthanc.log").open("wb")
    proc = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"

    def up():
        try:
            return httpx.get(f"{url}/system", timeout=2).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None and pytest.fail(f"Orthanc exited:\n{(root / 'orthanc.log').read_text()}")
    wait_for(up, 60, "Orthanc REST API")
    yield {"url": url, "dicom_port": dicom_port, "medmm_port": medmm_port}
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def medmm_node(trained_run, orthanc, tmp_path_factory):
    from medmm.serve.tokens import TokenStore

    root = tmp_path_factory.mktemp("node")
    tokens = {"ops": TokenStore(root / "tokens.json").add("ops")}
    srv = start_server(trained_run, root / "state", root / "tokens.json", tokens,
                       "--dicom-port", str(orthanc["medmm_port"]), "--ae-title", "MEDMM", "--allow-ae", "ORTHANC",
                       "--send-to", f"ORTHANC@127.0.0.1:{orthanc['dicom_port']}",
                       config={"dicom": {"quiet_seconds": 1.0}, "drift": {"min_samples": 1}})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def round_trip(orthanc, medmm_node, tmp_path_factory):
    """Upload a PHI-planted series to Orthanc, C-STORE it to medmm, wait for the SR in Orthanc."""
    import httpx

    url = orthanc["url"]
    files = phi_series(tmp_path_factory.mktemp("series") / "series")
    for f in files:
        r = httpx.post(f"{url}/instances", content=f.read_bytes(), timeout=30)
        assert r.status_code == 200, r.text
    study, series = r.json()["ParentStudy"], r.json()["ParentSeries"]
    r = httpx.post(f"{url}/modalities/medmm/store", content=series, timeout=120)
    assert r.status_code == 200, r.text

    def sr_series():
        found = httpx.get(f"{url}/studies/{study}/series", timeout=10).json()
        return [s for s in found if s["MainDicomTags"].get("Modality") == "SR"]
    (sr_entry,) = wait_for(sr_series, 240, "the SR to arrive in Orthanc", interval=1.0)
    return {"study": study, "sr_series": sr_entry, "source": pydicom.dcmread(files[0], stop_before_pixels=True)}


def expected_codes(server) -> set[tuple[str, str]]:
    """(scheme, code) of every finding of the served model, as the SR writer codes them."""
    from medmm.inference import load_model
    from medmm.inference.writers.dicom_sr import finding_concept

    args = server.proc.args
    predictor = load_model(args[args.index("--model") + 1], device="cpu")
    expected = set()
    for label in predictor.labels:
        codes = [{"system": c.system, "code": c.code, "match": c.match} for c in predictor.ontology.codes(label)]
        concept = finding_concept(label, codes)
        expected.add((concept.scheme_designator, concept.value))
    return expected


def sr_codes(path) -> set[tuple[str, str]]:
    import highdicom as hd

    groups = hd.sr.srread(path).content.get_image_measurement_groups()
    return {(g.finding_type.scheme_designator, g.finding_type.value) for g in groups}


def test_series_round_trip_returns_sr_in_same_study(orthanc, medmm_node, round_trip, tmp_path):
    import httpx

    (instance,) = round_trip["sr_series"]["Instances"]
    raw = httpx.get(f"{orthanc['url']}/instances/{instance}/file", timeout=30).content
    sr_path = tmp_path / "sr.dcm"
    sr_path.write_bytes(raw)
    ds = pydicom.dcmread(sr_path)
    source = round_trip["source"]
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
    referenced = {s.SeriesInstanceUID for st in ds.CurrentRequestedProcedureEvidenceSequence
                  for s in st.ReferencedSeriesSequence}
    assert referenced == {source.SeriesInstanceUID}
    got = sr_codes(sr_path)
    assert got == expected_codes(medmm_node) and ("SCT", "60046008") in got  # e.g. pleural effusion, SNOMED CT

    def metrics_with_drift():
        text = httpx.get(f"{medmm_node.url}/metrics", timeout=10).text
        return text if 'medmm_drift_psi{feature="input_hu"}' in text else None
    metrics = wait_for(metrics_with_drift, 120, "drift PSI (min_samples: 1)")
    assert 'medmm_dicom_series_total{outcome="sent"} 1.0' in metrics
    assert 'medmm_drift_psi{feature="Pleural effusion"}' in metrics and "medmm_drift_alert" in metrics
    assert 'medmm_dicom_associations_total{outcome="accepted"}' in metrics
    _assert_no_phi_anywhere(medmm_node, metrics)


@pytest.mark.skipif(not DICOMWEB_PLUGIN.is_file(), reason="Orthanc DICOMweb plugin missing: apt-get install "
                    "orthanc-dicomweb (.ci/run does)")
def test_sr_is_retrievable_by_study_uid_over_dicomweb(orthanc, medmm_node, round_trip, tmp_path):
    DICOMwebClient = pytest.importorskip("dicomweb_client.api", reason="dicomweb-client missing (dev extra)"
                                         ).DICOMwebClient
    client = DICOMwebClient(url=f"{orthanc['url']}/dicom-web")
    study_uid = str(round_trip["source"].StudyInstanceUID)
    found = client.search_for_series(study_instance_uid=study_uid, search_filters={"Modality": "SR"})
    assert len(found) == 1
    instances = [ds for ds in client.retrieve_study(study_uid) if ds.Modality == "SR"]
    assert len(instances) == 1
    instances[0].save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    assert sr_codes(tmp_path / "sr.dcm") == expected_codes(medmm_node)


def test_unlisted_calling_ae_is_rejected(orthanc, medmm_node):
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    ae = AE(ae_title="INTRUDER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", orthanc["medmm_port"], ae_title="MEDMM")
    assert assoc.is_rejected
    ae.shutdown()


def _assert_no_phi_anywhere(server, metrics: str) -> None:
    """The PHI sentinels appear in no log line, metric, audit record or stored output."""
    time.sleep(0.5)  # let the last log lines flush
    texts = {"log": server.log(), "metrics": metrics, "audit": (server.state_dir / "audit.jsonl").read_text()}
    for path in (server.state_dir / "spool").glob("*/out/*"):
        texts[path.name] = path.read_bytes().decode("latin-1")
    assert any(name == "report_sr.dcm" for name in texts)
    for where, text in texts.items():
        for sentinel in SENTINELS:
            assert sentinel not in text, f"PHI sentinel {sentinel!r} in {where}"
