"""Durable jobs: a sqlite job table plus a spool folder per job (input, then results).

Layout under the server's ``state_dir``::

    jobs.sqlite              id, status, source, kind, token, input hash, times, error
    spool/<job id>/input.*   the upload (zip / nii / nii.gz) or input/ (a DICOM series received)
    spool/<job id>/out/      result.json, report.html, report_sr.dcm, fhir.json
    audit.jsonl              see medmm.serve.audit

A job is *accepted* only once its row is committed and its input is complete on disk, so a
restart never loses one: :meth:`JobStore.recover` turns ``running`` rows back into ``queued`` and
the server re-runs every queued job in arrival order.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

STATUSES = ("queued", "running", "done", "failed")
ARTEFACTS = {"result.json": "application/json", "report.html": "text/html; charset=utf-8",
             "report_sr.dcm": "application/dicom", "fhir.json": "application/fhir+json"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL,
    input TEXT NOT NULL, indication TEXT, token TEXT, keep_phi INTEGER NOT NULL DEFAULT 0,
    input_sha256 TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL, started REAL, finished REAL
)"""


@dataclass
class Job:
    """One row of the job table."""

    id: str
    status: str
    source: str          # "http" or "dicom"
    kind: str            # "zip", "nifti" or "dicom_folder"
    input: str           # path relative to the job's spool folder
    indication: str | None
    token: str | None
    keep_phi: bool
    input_sha256: str | None
    error: str | None
    attempts: int
    created: float
    started: float | None
    finished: float | None


class JobStore:
    """The job table and spool (thread safe)."""

    def __init__(self, state_dir: str | Path):
        self.root = Path(state_dir)
        self.spool = self.root / "spool"
        self.spool.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.root / "jobs.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self._columns = [d[0] for d in self._db.execute("SELECT * FROM jobs LIMIT 0").description]
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- paths
    @staticmethod
    def new_id() -> str:
        """A fresh random job id (no information about the input)."""
        return uuid.uuid4().hex

    def job_dir(self, job_id: str) -> Path:
        return self.spool / job_id

    def out_dir(self, job_id: str) -> Path:
        return self.spool / job_id / "out"

    def input_path(self, job: Job) -> Path:
        return self.job_dir(job.id) / job.input

    # ------------------------------------------------------------------ rows
    def add(self, job_id: str, source: str, kind: str, input_name: str, indication: str | None = None,
            token: str | None = None, keep_phi: bool = False, input_sha256: str | None = None) -> Job:
        """Commit a queued job whose input is already complete in :meth:`job_dir`."""
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, status, source, kind, input, indication, token, keep_phi, input_sha256, created)"
                " VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, source, kind, input_name, indication, token, int(keep_phi), input_sha256, time.time()))
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def _job(self, row) -> Job:
        data = dict(zip(self._columns, row))
        data["keep_phi"] = bool(data["keep_phi"])
        return Job(**data)

    def set_status(self, job_id: str, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(status)
        now = time.time()
        with self._lock:
            if status == "running":
                self._db.execute("UPDATE jobs SET status='running', started=?, attempts=attempts+1 WHERE id=?",
                                 (now, job_id))
            elif status == "queued":
                self._db.execute("UPDATE jobs SET status='queued', started=NULL WHERE id=?", (job_id,))
            else:
                self._db.execute("UPDATE jobs SET status=?, error=?, finished=? WHERE id=?",
                                 (status, error, now, job_id))

    def ids_with_status(self, status: str) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE status=? ORDER BY created", (status,)).fetchall()
        return [r[0] for r in rows]

    def count(self, status: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM jobs WHERE status=?", (status,)).fetchone()[0])

    def recover(self) -> list[str]:
        """After a restart: interrupted (running) jobs go back to the queue; returns all queued ids."""
        with self._lock:
            self._db.execute("UPDATE jobs SET status='queued', started=NULL WHERE status='running'")
        return self.ids_with_status("queued")

    def purge_uncommitted(self) -> list[str]:
        """At start: delete spool folders without a job row (an upload cut off by a crash before its
        202, so the client knows it was not accepted). A folder holding a received DICOM series
        (``input/``) is left for the DICOM node, which re-queues it (its instances were acknowledged)."""
        purged = []
        for folder in self.spool.iterdir():
            if folder.is_dir() and not (folder / "input").is_dir() and self.get(folder.name) is None:
                shutil.rmtree(folder, ignore_errors=True)
                purged.append(folder.name)
        return purged

    def purge_finished(self, older_than_s: float) -> list[str]:
        """Delete finished jobs (row, spool and results) older than ``older_than_s``; returns their ids."""
        cutoff = time.time() - older_than_s
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE status IN ('done', 'failed') AND finished < ?",
                                    (cutoff,)).fetchall()
        ids = [r[0] for r in rows]
        for job_id in ids:
            shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
            with self._lock:
                self._db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
        return ids

    def close(self) -> None:
        with self._lock:
            self._db.close()
