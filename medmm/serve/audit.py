"""Audit log: one JSON line per finished request or job — who, what (content hash), outcome, times.

Records hold no PHI by construction: the token's *name*, the SHA-256 of the uploaded bytes, the
job id, an outcome word, the one-line error (already PHI-free, see ``medmm.errors``) and
durations. Lines are appended under a lock and flushed, so a crash loses at most the line being
written.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

FIELDS = ("time", "event", "token", "job_id", "input_sha256", "outcome", "error", "source", "durations_s")


class AuditLog:
    """Append-only JSON-lines audit file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record (unknown field names are a bug: they could smuggle PHI in)."""
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ValueError(f"audit fields not allowed: {sorted(unknown)}")
        row = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "event": event, **fields}
        line = json.dumps(row, sort_keys=True) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
        return row
