"""The ``serve.yaml`` schema: where state lives, limits, auth, TLS, the DICOM node, drift alerts.

YAML is data: read with ``yaml.safe_load`` and validated by pydantic models that forbid unknown
keys, so a typo is one error line naming the file and the key. CLI options override the file.

>>> cfg = load_serve_config(None, {"port": 8080})
>>> cfg.limits.max_queue
32
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from medmm.config.base import Strict as _Strict
from medmm.errors import MedmmConfigError


class Limits(_Strict):
    """Request and work limits (everything a client can push at the server is bounded)."""

    max_body_bytes: int = Field(2 * 1024**3, ge=1024, description="largest accepted upload (413 above)")
    max_predict_bytes: int = Field(256 * 1024**2, ge=1024, description="largest synchronous /v1/predict upload")
    max_archive_members: int = Field(10_000, ge=1, description="zip members (413 above)")
    max_archive_bytes: int = Field(4 * 1024**3, ge=1024, description="declared uncompressed zip size (413 above)")
    rate_per_minute: float = Field(120.0, gt=0, description="requests per token per minute (429 above)")
    rate_burst: int = Field(30, ge=1, description="requests a token may send at once before the rate applies")
    max_concurrent: int = Field(1, ge=1, le=64, description="inferences running at the same time")
    max_queue: int = Field(32, ge=1, description="queued jobs; a new job beyond this gets 429")
    predict_timeout_s: float = Field(600.0, gt=0, description="how long /v1/predict waits for its result")


class DicomNode(_Strict):
    """The DICOM Storage SCP (``--dicom-port``) and where SRs go (``--send-to``)."""

    port: int | None = Field(None, ge=1, le=65535, description="DICOM port; None: no DICOM node")
    ae_title: str = Field("MEDMM", min_length=1, max_length=16)
    allow_ae: list[str] = Field(default_factory=list, description="calling AE titles accepted (others rejected)")
    send_to: str | None = Field(None, description="AE@host:port receiving the SR, e.g. ORTHANC@127.0.0.1:4242")
    quiet_seconds: float = Field(5.0, gt=0, description="a series is complete after this long without new images")
    sr_keep_phi: bool = Field(True, description="SR sent back keeps patient/study identity so the PACS files it "
                              "with its study (it returns to the PACS it came from); stored copies never do")

    @model_validator(mode="after")
    def _needs_allow_list(self) -> "DicomNode":
        if self.port is not None and not self.allow_ae:
            raise ValueError("allow_ae is empty: list the calling AE titles to accept (--allow-ae); "
                             "an open DICOM node would accept any sender")
        return self

    @field_validator("send_to")
    @classmethod
    def _send_to(cls, value: str | None) -> str | None:
        if value is not None:
            parse_peer(value)
        return value


class Drift(_Strict):
    """Drift monitoring: PSI of running statistics against the run's reference profile."""

    enabled: bool = True
    psi_alert: float = Field(0.25, gt=0, description="PSI above which medmm_drift_alert is 1 (0.25: a major shift)")
    per_feature: dict[str, float] = Field(default_factory=dict, description="PSI thresholds by feature name")
    min_samples: int = Field(20, ge=1, description="scans seen before PSI is reported")
    window: int = Field(500, ge=10, description="most recent scans the running statistics cover")


class ServeConfig(_Strict):
    """Everything ``medmm serve`` needs besides the model."""

    model: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    state_dir: Path = Field(Path("medmm_serve"), description="job table, spool, results, audit log")
    tokens_file: Path | None = None
    metrics_public: bool = Field(False, description="serve /metrics without a token even off loopback")
    retention_s: float = Field(7 * 24 * 3600.0, gt=0, description="finished jobs' spool and results live this long")
    device: str | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    limits: Limits = Field(default_factory=Limits)
    dicom: DicomNode = Field(default_factory=DicomNode)
    drift: Drift = Field(default_factory=Drift)

    def loopback(self) -> bool:
        """True when the HTTP server is bound to a loopback address only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_peer(value: str) -> tuple[str, str, int]:
    """``AE@host:port`` → (AE title, host, port).

    Raises:
        MedmmConfigError: not of that form.
    """
    ae, sep, rest = value.partition("@")
    host, colon, port = rest.rpartition(":")
    if not (sep and colon and ae and host and port.isdigit() and 0 < int(port) < 65536 and len(ae) <= 16):
        raise MedmmConfigError("send_to", f"{value!r} is not AE@host:port (e.g. ORTHANC@127.0.0.1:4242)")
    return ae, host, int(port)


def load_serve_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> ServeConfig:
    """Read ``serve.yaml`` (optional) and apply CLI ``overrides`` (dotted keys allowed; None skipped).

    Raises:
        MedmmConfigError: unreadable YAML, unknown key or bad value (names the file and key).
    """
    data: dict[str, Any] = {}
    where = str(path) if path else "serve options"
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise MedmmConfigError(path, f"cannot read serve config ({type(err).__name__})") from None
        if not isinstance(data, dict):
            raise MedmmConfigError(path, "serve config must be a mapping of keys to values")
    for dotted, value in (overrides or {}).items():
        if value is None or value == () or value == []:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    try:
        return ServeConfig(**data)
    except ValidationError as err:
        from medmm.config import format_validation_error

        raise MedmmConfigError(where, format_validation_error(err, ServeConfig)) from None
