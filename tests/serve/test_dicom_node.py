"""The DICOM node without a PACS: pynetdicom as the sender, and a destination that is down —
the series is still diagnosed, the failed SR delivery is logged (no PHI), counted and audited."""

from __future__ import annotations

import hashlib
import json

import pytest

from serving import SENTINELS, free_port, phi_series, start_server, wait_for

pytestmark = pytest.mark.slow


def test_send_failure_is_counted_and_audited(trained_run, tmp_path, make_tokens):
    import httpx
    import pydicom
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    tokens = make_tokens(tmp_path / "tokens.json", ops=("jobs",))
    port, nobody = free_port(), free_port()
    srv = start_server(trained_run, tmp_path / "state", tmp_path / "tokens.json", tokens,
                       "--dicom-port", str(port), "--allow-ae", "SCANNER", "--send-to", f"PACS@127.0.0.1:{nobody}",
                       config={"dicom": {"quiet_seconds": 1.0}})
    try:
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", port, ae_title="MEDMM")
        assert assoc.is_established
        statuses = [assoc.send_c_store(pydicom.dcmread(f)).Status for f in phi_series(tmp_path / "series")]
        assoc.release()
        assert statuses and set(statuses) == {0x0000}

        def sent_or_failed():
            text = httpx.get(f"{srv.url}/metrics", timeout=10).text
            return text if 'medmm_dicom_series_total{outcome="send_failed"} 1.0' in text else None
        metrics = wait_for(sent_or_failed, 180, "the SR delivery attempt", interval=0.5)
        assert f"medmm_dicom_instances_total {len(statuses)}.0" in metrics
        assert 'medmm_errors_total{type="dicom_send"} 1.0' in metrics
        audit = [json.loads(line) for line in (srv.state_dir / "audit.jsonl").read_text().splitlines()]
        (sent,) = [r for r in audit if r["event"] == "sr_sent"]
        assert sent["outcome"] == "send_failed" and sent["error"]
        assert any(r["event"] == "job" and r["outcome"] == "done" and r["source"] == "dicom" for r in audit)
        (accepted,) = [r for r in audit if r["event"] == "accepted"]
        digest = hashlib.sha256()
        for f in sorted((srv.state_dir / "spool" / accepted["job_id"] / "input").glob("*.dcm")):
            digest.update(f.read_bytes())
        assert accepted["input_sha256"] == digest.hexdigest()  # the content, not the file names
        assert accepted["token"] == "dicom:SCANNER"  # who sent it: the calling AE title
        assert "SR not sent" in srv.log()
        for text in (srv.log(), metrics, json.dumps(audit)):
            assert not any(s in text for s in SENTINELS)
        assert not list((srv.state_dir / "incoming").iterdir())  # the series moved into its job
    finally:
        srv.stop()
