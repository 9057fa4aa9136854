"""`RunMeta`: the typed, versioned content of a run's ``medmm.json`` — every fact stored once.

A run dir is ``<name>.safetensors`` weights + ``medmm.json`` holding one `RunMeta`
(``schema: medmm.run/2``). The resolved workflow is the single source of the preprocessing,
inferer, network and label list (read through properties); next to it live what training found
(thresholds, derived network values, metrics, reference statistics for drift/plausibility) and
what was done to the model since (``model_history``: compression, calibration ...).

`read_run_meta` validates a whole ``medmm.json`` before anything is built: sizes are bounded,
thresholds must be finite probabilities keyed by exactly the labels, unknown keys are refused,
and every problem is one `MedmmInputError` line naming the file and the field. Run dirs of the
previous layout (``format: medmm-run/1``) go through `migrate_run_meta`, the only migration.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from medmm.config.base import Strict
from medmm.config.inferer import InfererConfig
from medmm.config.network import ModelConfig, NetworkDerived
from medmm.config.preprocessing import PreprocessingConfig
from medmm.config.workflow import TextConfig, WorkflowConfig
from medmm.errors import MedmmInputError

RUN_SCHEMA = "medmm.run/2"
META_FILE = "medmm.json"
MAX_META_BYTES = 64 * 2**20  # a medmm.json is kilobytes to a few MB (patient-id hashes); refuse before reading more

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class OntologyRecord(Strict):
    """The ontology the run was trained with (its path as given, and the content hash checked at load)."""

    path: str | None = None
    sha256: Sha256


class TextEncoderRecord(Strict):
    """Which pretrained text-encoder files the weights expect (frozen layers are not copied)."""

    name_or_path: str
    weights_sha256: Sha256 | None = None
    saved: Literal["all", "trainable", "none"]


class ReportLMRecord(Strict):
    """A pretrained report LM: its name, architecture and weights hash (a LoRA run re-reads the base)."""

    name_or_path: str
    model_type: str | None = None
    weights_sha256: str | None = None
    saved: Literal["adapter", "all"]


class DataRecord(Strict):
    """Where the training data came from, without patient ids (pseudonymous hashes only)."""

    source: str
    n_cases: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    patient_id_sha256: dict[str, list[Sha256]] = Field(default_factory=dict)


class CheckpointRecord(Strict):
    file: str = Field(pattern=r"^[A-Za-z0-9_.-]+\.safetensors$")
    n_tensors: int = Field(ge=0)


class HUProfile(Strict):
    """Summary of the training inputs' HU values (what a plausible scan looks like)."""

    mean: float
    std: float = Field(ge=0)
    quantiles: dict[str, float] = Field(default_factory=dict, description="e.g. {'0.01': -1000, '0.5': -200}")


class ReferenceProfile(Strict):
    """Reference statistics recorded at training: input HU profile, validation positive rates."""

    input_hu: HUProfile | None = None
    val_positive_rate: dict[str, Probability] = Field(default_factory=dict)


class HistoryEntry(Strict):
    """One thing done to the model after (or as) training: ``trained``, ``pruned``, ``quantised`` ..."""

    action: str = Field(pattern=r"^[a-z_]+$")
    details: dict[str, Any] = Field(default_factory=dict)


class RunMeta(Strict):
    """Everything a run dir says about its model (see module docstring)."""

    schema_: Literal["medmm.run/2"] = Field(RUN_SCHEMA, alias="schema")
    name: str = Field(max_length=256)
    run_id: str = Field(max_length=256)
    workflow: WorkflowConfig
    network_derived: NetworkDerived = Field(default_factory=NetworkDerived)
    thresholds: dict[str, Probability]
    threshold_rule: Literal["f1", "youden", "fixed"] = "f1"
    calibration: dict[str, Any] | None = None
    text_encoder: TextEncoderRecord | None = None
    report_lm: ReportLMRecord | None = None  # issue 16: medmm.models.lora
    ontology: OntologyRecord
    versions: dict[str, str] = Field(default_factory=dict)
    data: DataRecord | None = None
    best_epoch: int | None = Field(None, ge=0)
    last_epoch: int | None = Field(None, ge=0)
    metrics: dict[str, Any] = Field(default_factory=dict)
    checkpoints: dict[str, CheckpointRecord] = Field(default_factory=dict)
    model_history: list[HistoryEntry] = Field(default_factory=list)
    reference: ReferenceProfile | None = None

    model_config = Strict.model_config | {"populate_by_name": True, "protected_namespaces": ()}

    @model_validator(mode="after")
    def _thresholds_match_labels(self) -> RunMeta:
        if list(self.thresholds) != self.labels:
            missing = [label for label in self.labels if label not in self.thresholds]
            extra = [key for key in self.thresholds if key not in self.labels]
            detail = (f"missing {missing[:3]}" if missing else f"unknown {extra[:3]}" if extra
                      else "in another order than workflow.data.labels")
            raise ValueError(f"thresholds must have one entry per label in label order ({detail})")
        return self

    # one source for each fact: the resolved workflow
    @property
    def labels(self) -> list[str]:
        return list(self.workflow.data.labels)

    @property
    def eval_labels(self) -> list[str]:
        return list(self.workflow.data.eval_labels or self.workflow.data.labels)

    @property
    def preprocessing(self) -> PreprocessingConfig:
        return self.workflow.preprocessing

    @property
    def inferer(self) -> InfererConfig:
        return self.workflow.resolved_inferer

    @property
    def network(self) -> ModelConfig:
        return self.workflow.network

    @property
    def text(self) -> TextConfig:
        return self.workflow.training.text

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2) + "\n"


def hash_patient_id(patient_id: str) -> str:
    """Pseudonymous key of a patient id as stored in ``medmm.json`` (``data.patient_id_sha256``).

    Run directories are shared artefacts, so they hold no patient ids; evaluation hashes the ids
    of its manifest with this function and refuses scans whose hash is in the training split.
    """
    return hashlib.sha256(f"medmm-patient:{patient_id}".encode()).hexdigest()


def _field_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<top>"
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{loc}: {msg}{more}"


def validate_run_meta(raw: Any, where: str | Path) -> RunMeta:
    """Validate (and if needed migrate) a parsed ``medmm.json``; one-line MedmmInputError on failure."""
    if not isinstance(raw, dict):
        raise MedmmInputError(where, "run metadata must be a JSON object")
    if raw.get("schema") != RUN_SCHEMA:
        raw = migrate_run_meta(raw, where)
    try:
        return RunMeta.model_validate(raw)
    except ValidationError as err:
        raise MedmmInputError(where, f"invalid run metadata: {_field_error(err)}") from None


def read_run_meta(run_dir: str | Path) -> RunMeta:
    """Read and validate ``<run_dir>/medmm.json`` (bounded size, strict schema)."""
    path = Path(run_dir) / META_FILE
    if not path.is_file():
        raise MedmmInputError(run_dir, "not a medmm run directory (no medmm.json); train one with `medmm train`")
    if path.stat().st_size > MAX_META_BYTES:
        raise MedmmInputError(path, f"is {path.stat().st_size} bytes; a run's metadata is at most {MAX_META_BYTES}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MedmmInputError(path, f"cannot read run metadata ({type(err).__name__}: {err})") from None
    return validate_run_meta(raw, path)


def migrate_run_meta(raw: dict[str, Any], where: str | Path) -> dict[str, Any]:
    """The one migration: a ``medmm-run/1`` run dir (medmm 0.1 training) → ``medmm.run/2``.

    v1 stored derived values inside the workflow's network section and several facts twice;
    anything else (no ``format``, or runs without a stored workflow) is refused with the fix.
    """
    fix = "re-train it with `medmm train` (or `medmm demo`)"
    if raw.get("format") != "medmm-run/1" or not isinstance(raw.get("workflow"), dict):
        found = raw.get("schema") or raw.get("format") or "no schema"
        raise MedmmInputError(where, f"run metadata has {found!r}, not {RUN_SCHEMA!r}; {fix}")
    import copy

    workflow = copy.deepcopy(raw["workflow"])
    encoder = ((workflow.get("network") or {}).get("image_encoder") or {})
    generator = ((workflow.get("network") or {}).get("report_generator") or {})
    if encoder.pop("global_pool", "avg") != "avg":
        raise MedmmInputError(where, f"run uses global_pool: avgmax, which this medmm no longer has; {fix}")
    if encoder.get("histogram_hu") or encoder.get("context_histogram"):
        raise MedmmInputError(where, "run has HU histograms inside its image encoder; they are now the separate "
                                     f"network.radiomics branch with other weights; {fix}")
    for key in ("histogram_hu", "histogram_centres", "context_histogram"):
        encoder.pop(key, None)
    (workflow.get("training") or {}).pop("histogram_cache_mb", None)
    derived = {"vocab_ids": generator.pop("vocab_ids", None)}
    keep = ("name", "run_id", "thresholds", "threshold_rule", "text_encoder", "versions", "data", "best_epoch",
            "last_epoch", "metrics", "checkpoints")
    out = {key: raw[key] for key in keep if key in raw}
    data = out.get("data")
    if isinstance(data, dict):
        out["data"] = {k: data[k] for k in ("source", "n_cases", "patient_id_sha256") if k in data}
    onto = raw.get("ontology") if isinstance(raw.get("ontology"), dict) else {}
    out.update(schema=RUN_SCHEMA, workflow=workflow, network_derived=derived,
               ontology={"path": onto.get("path"), "sha256": onto.get("sha256") or raw.get("ontology_sha256")},
               model_history=[{"action": "migrated", "details": {"from": "medmm-run/1"}}])
    return out
