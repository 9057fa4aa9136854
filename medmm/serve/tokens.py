"""Bearer tokens: a JSON file of *hashes*, never of tokens; constant-time checks; live revocation.

A token is 32 random bytes (``secrets.token_urlsafe``), shown once by ``medmm serve token add``.
The file stores its SHA-256: the token has 256 bits of entropy, so a fast hash cannot be brute
forced and a slow password KDF would only add latency to every request. The file is re-read when
its modification time, inode or size changes, so ``medmm serve token revoke`` takes effect without
a restart.

>>> store = TokenStore(Path("tokens.json"))            # doctest: +SKIP
>>> token = store.add("pacs-bridge", scopes=["jobs"])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from medmm.errors import MedmmConfigError, MedmmInputError

SCOPES = ("jobs", "predict", "metrics")
_FORMAT = "medmm.tokens/1"


@dataclass(frozen=True)
class Token:
    """One token's record: name, hash, allowed endpoint groups, whether outputs may keep PHI."""

    name: str
    sha256: str
    scopes: tuple[str, ...] = SCOPES
    allow_phi: bool = False
    created: str = field(default="", compare=False)


def token_hash(token: str) -> str:
    """SHA-256 hex of a token (what the file stores)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """The tokens file: add / revoke / list, and :meth:`verify` for the server."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._tokens: list[Token] = []

    # ------------------------------------------------------------------ file
    def load(self) -> list[Token]:
        """Tokens in the file (empty when it does not exist yet)."""
        if not self.path.exists():
            return []
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            rows = doc["tokens"] if doc.get("format") == _FORMAT else None
            if rows is None:
                raise ValueError("not a medmm tokens file")
            return [Token(r["name"], r["sha256"], tuple(r.get("scopes", SCOPES)), bool(r.get("allow_phi", False)),
                          r.get("created", "")) for r in rows]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise MedmmConfigError(self.path, f"unreadable tokens file ({type(err).__name__}: {err})") from None

    def _save(self, tokens: list[Token]) -> None:
        from medmm.io.writers import atomic_write_bytes

        doc = {"format": _FORMAT, "tokens": [
            {"name": t.name, "sha256": t.sha256, "scopes": list(t.scopes), "allow_phi": t.allow_phi,
             "created": t.created} for t in tokens]}
        try:  # owner-only when new; a mode an admin widened (e.g. for a container's user) is kept
            mode = self.path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o600  # hashes only, but nobody else needs to read them by default
        atomic_write_bytes(self.path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
        os.chmod(self.path, mode)

    def add(self, name: str, scopes: list[str] | tuple[str, ...] = SCOPES, allow_phi: bool = False) -> str:
        """Create a token called ``name``; returns the token (the only time it exists in clear).

        Raises:
            MedmmInputError: the name is taken or a scope is unknown.
        """
        bad = [s for s in scopes if s not in SCOPES]
        if bad:
            raise MedmmInputError(None, f"unknown scope {bad[0]!r}; choose from {', '.join(SCOPES)}")
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise MedmmInputError(None, f"token name {name!r}: use letters, digits, '-', '_' or '.'")
        tokens = self.load()
        if any(t.name == name for t in tokens):
            raise MedmmInputError(self.path, f"a token named {name!r} exists; revoke it first")
        token = secrets.token_urlsafe(32)
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._save([*tokens, Token(name, token_hash(token), tuple(scopes or SCOPES), allow_phi, created)])
        return token

    def revoke(self, name: str) -> None:
        """Remove the token called ``name``.

        Raises:
            MedmmInputError: no such token.
        """
        tokens = self.load()
        if not any(t.name == name for t in tokens):
            raise MedmmInputError(self.path, f"no token named {name!r}")
        self._save([t for t in tokens if t.name != name])

    # ---------------------------------------------------------------- server
    def _current(self) -> list[Token]:
        # the modification time alone can miss a rewrite within one clock tick of the file system
        # (often milliseconds): every save is an atomic replace, so the inode and size change too
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._tokens, self._stamp = self.load(), stamp
            return self._tokens

    def verify(self, presented: str | None) -> Token | None:
        """The token record matching ``presented``, or None.

        Compares against every stored hash with ``hmac.compare_digest`` and does not stop at the
        first match, so the time taken does not reveal which or how many hashes matched.
        """
        if not presented:
            return None
        digest = token_hash(presented)
        found = None
        for token in self._current():
            if hmac.compare_digest(digest, token.sha256):
                found = token
        return found
