"""The DICOM node: a pynetdicom Storage SCP for CT that diagnoses complete series and C-STOREs the SR back.

* Associations are accepted only from the calling AE titles in ``dicom.allow_ae`` (pynetdicom
  rejects the others at association time); each accepted/rejected/aborted one is counted.
* Instances are written to ``<state>/incoming/<series key>/<instance key>.dcm`` where the keys
  are salted hashes of the UIDs, so no UID appears in a file name or a log line.
* A series is complete after ``dicom.quiet_seconds`` without a new instance: its folder moves
  into a new job's spool and the job joins the same queue as HTTP jobs.
* When the job is done, the SR (TID 1500, referencing the study and series) is built in memory
  and C-STOREd to ``dicom.send_to``. By default it keeps the patient/study identity
  (``dicom.sr_keep_phi``) so the PACS files it with its study; the copy in the job's results is
  de-identified like every other stored output.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from medmm.serve.config import parse_peer
from medmm.serve.worker import timer

log = logging.getLogger("medmm.serve")
_SALT = b"medmm-serve-spool-v1"
_SUCCESS, _OUT_OF_RESOURCES, _CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000


def spool_key(uid: str) -> str:
    """Salted short hash of a UID: a folder/file name that does not reveal the UID."""
    return hashlib.sha256(_SALT + str(uid).encode()).hexdigest()[:24]


class DicomNode:
    """Storage SCP + series assembler + SR sender of one :class:`~medmm.serve.service.Service`."""

    def __init__(self, service: Any):
        self.service = service
        self.cfg = service.config.dicom
        self.incoming = Path(service.config.state_dir) / "incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self._last_seen: dict[str, float] = {}
        self._senders: dict[str, str] = {}  # series key -> calling AE title (for the audit log)
        self._lock = threading.Lock()
        self._server = None
        self._assembler: threading.Thread | None = None
        self._adopt_orphans()
        # series left over from before a restart are completed like any other
        for folder in self.incoming.iterdir():
            if folder.is_dir():
                self._last_seen[folder.name] = time.monotonic()

    def _adopt_orphans(self) -> None:
        """A series moved into a job folder whose row was never committed (a crash in between) goes
        back to ``incoming``: its instances were acknowledged to the PACS, so it must not be lost."""
        store = self.service.store
        for folder in store.spool.iterdir():
            if (folder / "input").is_dir() and store.get(folder.name) is None:
                shutil.move(str(folder / "input"), str(self.incoming / folder.name))
                shutil.rmtree(folder, ignore_errors=True)
                log.warning("DICOM: series of an uncommitted job %s re-queued after a restart", folder.name)

    # --------------------------------------------------------------- lifecycle
    def start(self) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
        from pynetdicom.sop_class import CTImageStorage, EnhancedCTImageStorage, Verification

        ae = AE(ae_title=self.cfg.ae_title)
        for sop_class in (CTImageStorage, EnhancedCTImageStorage):
            ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.require_calling_aet = list(self.cfg.allow_ae)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_ACCEPTED, self._on_assoc("accepted")),
                    (evt.EVT_REJECTED, self._on_assoc("rejected")), (evt.EVT_ABORTED, self._on_assoc("aborted"))]
        host = self.service.config.host
        self._server = ae.start_server((host, self.cfg.port), block=False, evt_handlers=handlers)
        self._assembler = threading.Thread(target=self._assemble_loop, name="medmm-dicom-series", daemon=True)
        self._assembler.start()
        log.info("DICOM node %s listening on %s:%d (accepting %s)", self.cfg.ae_title, host, self.cfg.port,
                 ", ".join(self.cfg.allow_ae))

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    # ---------------------------------------------------------------- receive
    def _on_assoc(self, outcome: str):
        def handler(event: Any) -> None:
            self.service.metrics.dicom_associations.labels(outcome=outcome).inc()
        return handler

    def _on_store(self, event: Any) -> int:
        """C-STORE: write the instance under its series' incoming folder (no PHI in names)."""
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            series_uid, sop_uid = ds.SeriesInstanceUID, ds.SOPInstanceUID
        except Exception as err:  # noqa: BLE001 - a malformed dataset is refused, never a crash
            log.warning("DICOM: refused an unreadable instance (%s)", type(err).__name__)
            self.service.metrics.errors.labels(type="dicom_unreadable").inc()
            return _CANNOT_UNDERSTAND
        if self.service.queue_full():
            self.service.metrics.rejected.labels(reason="queue").inc()
            return _OUT_OF_RESOURCES
        key = spool_key(series_uid)
        with self._lock:
            folder = self.incoming / key
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{spool_key(sop_uid)}.dcm"
            part = target.with_suffix(".part")  # a crash mid-write leaves no truncated .dcm in the series
            ds.save_as(part, enforce_file_format=True)
            part.replace(target)
            self._last_seen[key] = time.monotonic()
            self._senders[key] = str(getattr(event.assoc.requestor, "ae_title", "") or "").strip()
        self.service.metrics.dicom_instances.inc()
        return _SUCCESS

    def _assemble_loop(self) -> None:
        while not self.service.stopping.wait(min(0.25, self.cfg.quiet_seconds / 4)):
            now = time.monotonic()
            with self._lock:  # only the bookkeeping and the move hold up C-STOREs, not the hashing
                complete = [k for k, seen in self._last_seen.items() if now - seen >= self.cfg.quiet_seconds]
                claimed = [(self._claim(key), self._senders.pop(key, None)) for key in complete]
            for job_id, sender in claimed:
                if job_id is not None:
                    self._enqueue_series(job_id, sender)

    def _claim(self, key: str) -> str | None:
        """Move a complete series into a new job folder (lock held); its id, or None if it was empty."""
        self._last_seen.pop(key)
        source = self.incoming / key
        if not any(source.glob("*.dcm")):
            shutil.rmtree(source, ignore_errors=True)
            return None
        job_id = self.service.store.new_id()
        self.service.store.job_dir(job_id).mkdir(parents=True)
        shutil.move(str(source), str(self.service.store.job_dir(job_id) / "input"))
        return job_id

    def _enqueue_series(self, job_id: str, sender: str | None) -> None:
        """Commit the job of a claimed series: SHA-256 over its instances' bytes (in file-name order)."""
        store = self.service.store
        folder = store.job_dir(job_id) / "input"
        for stale in folder.glob("*.part"):  # written when the server crashed: never acknowledged
            stale.unlink()
        files = sorted(folder.glob("*.dcm"))
        digest = hashlib.sha256()
        for f in files:
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        who = f"dicom:{sender}" if sender else None
        store.add(job_id, "dicom", "dicom_folder", "input", token=who, input_sha256=digest.hexdigest())
        self.service.audit.record("accepted", token=who, job_id=job_id, input_sha256=digest.hexdigest(),
                                  outcome="queued", source="dicom")
        log.info("DICOM: series complete (%d instances) -> job %s", len(files), job_id)
        self.service.pool.submit(job_id)

    # ------------------------------------------------------------------- send
    def send_result(self, job: Any, result: Any, durations: dict[str, float]) -> None:
        """C-STORE the SR of a finished job to ``dicom.send_to`` (failures logged and counted)."""
        metrics = self.service.metrics
        if not self.cfg.send_to:
            metrics.dicom_series.labels(outcome="diagnosed").inc()
            return
        with timer(metrics, durations)("send"):
            ok, why = self._send_sr(result)
        metrics.dicom_series.labels(outcome="sent" if ok else "send_failed").inc()
        self.service.audit.record("sr_sent", job_id=job.id, outcome="sent" if ok else "send_failed", error=why,
                                  source="dicom", durations_s={"send": round(durations.get("send", 0.0), 4)})
        if ok:
            log.info("job %s: SR sent to %s", job.id, self.cfg.send_to)
        else:
            metrics.errors.labels(type="dicom_send").inc()
            log.warning("job %s: SR not sent to %s: %s", job.id, self.cfg.send_to, why)

    def _send_sr(self, result: Any) -> tuple[bool, str | None]:
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import AE
        from pynetdicom.sop_class import Comprehensive3DSRStorage

        from medmm.inference.writers.dicom_sr import build_sr, read_evidence

        sr = build_sr(result, read_evidence(list(result.source_files)), keep_phi=self.cfg.sr_keep_phi)
        ae_title, host, port = parse_peer(self.cfg.send_to)
        ae = AE(ae_title=self.cfg.ae_title)
        ae.add_requested_context(Comprehensive3DSRStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        assoc = ae.associate(host, port, ae_title=ae_title)
        if not assoc.is_established:
            return False, "association refused or destination unreachable"
        try:
            status = assoc.send_c_store(sr)
        finally:
            assoc.release()
        code = getattr(status, "Status", None)
        if code is None:
            return False, "no C-STORE response"
        return (True, None) if code == _SUCCESS else (False, f"C-STORE status 0x{code:04X}")
