"""Pretrained image-encoder weights: read a weights file, map its keys, load, and report what fitted.

``network.image_encoder.pretrained`` names a file (or a folder holding one) with public weights,
e.g. the self-supervised Swin-ViT CT weights (``model_swinvit.pt``: ``{"state_dict": {"module.
patch_embed...", "module.layers1.0..."}}``), a MONAI bundle's ``models/model.pt`` (SegResNet keys
``convInit.conv.weight``, ``down_layers.0...``) or CT-FM's ``model.safetensors`` (SegResEncoder keys
``conv_init.weight``, ``layers.0...``). Files are read with safetensors or
``torch.load(weights_only=True)`` only. Keys are mapped (prefix removed/added, layout renames),
compared with the encoder's state dict and sorted into matched / missing / unexpected /
shape-mismatched, plus skipped keys (outside ``key_prefix``, or parts medmm does not build: a
classifier, a decoder). The report goes to the run dir (`REPORT_FILE`) and one log line.

Why hand-written: ``nn.Module.load_state_dict(strict=False)`` reports missing/unexpected keys but
raises on a shape mismatch and knows nothing of prefixes or layouts; MONAI's ``SwinUNETR.load_from``
copies the SSL weights without telling what fitted and only into a whole SwinUNETR.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medmm.config.network import PretrainedWeights
from medmm.errors import MedmmConfigError

log = logging.getLogger(__name__)

REPORT_FILE = "encoder_weights.json"
WHERE = "network.image_encoder.pretrained"
#: Files tried, in order, inside a folder (a MONAI bundle, a Hugging Face model folder).
FOLDER_FILES = ("models/model.safetensors", "models/model.pt", "model.safetensors", "pytorch_model.bin", "model.pt")
#: Keys of a training checkpoint that wrap the state dict.
WRAPPERS = ("state_dict", "model", "network", "model_state_dict")

#: Per encoder: key renames of its public weights (file spelling -> MONAI spelling) and prefixes of
#: parts medmm does not build (their keys are skipped, not unexpected).
LAYOUTS: dict[str, dict[str, Any]] = {
    # the SSL Swin-ViT weights name the MLP layers fc1/fc2; MONAI's MLPBlock calls them linear1/2
    # (MONAI's SwinTransformerBlock.load_from maps the same pairs)
    "swin_vit": {"renames": ((".mlp.fc1.", ".mlp.linear1."), (".mlp.fc2.", ".mlp.linear2.")), "skip": ()},
    "segresnet": {"renames": (), "skip": ("up_layers.", "up_samples.", "conv_final.")},
    "segresnet_ds": {"renames": (), "skip": ("head_module.",)},
    "densenet121": {"renames": (), "skip": ("class_layers.",)},
    "seresnet50": {"renames": (), "skip": ("last_linear.",)},
    "efficientnet-b0": {"renames": (), "skip": ("_fc.",)},
}
_RESNET_LAYOUT: dict[str, Any] = {"renames": (), "skip": ("fc.",)}


@dataclass
class LoadReport:
    """What a weights file gave the encoder (written to ``encoder_weights.json`` in the run dir).

    ``matched`` / ``missing`` / ``shape_mismatched`` name encoder keys (after mapping);
    ``unexpected`` / ``skipped`` name the file's own keys (what to look for in the file).
    """

    file: str  # the file's name only: the run dir never depends on where the weights were
    sha256: str
    encoder: str
    key_prefix: str
    add_prefix: str
    strict: bool
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def mismatches(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.shape_mismatched)

    def summary(self) -> str:
        """The one log line: counts per category."""
        return (f"pretrained image encoder ({self.encoder}) from {self.file}: {len(self.matched)} matched, "
                f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                f"{len(self.shape_mismatched)} shape-mismatched, {len(self.skipped)} skipped keys")

    def record(self) -> dict[str, Any]:
        """Counts for the run's ``medmm.json`` (the lists stay in `REPORT_FILE`)."""
        return {"file": self.file, "sha256": self.sha256, "report": REPORT_FILE, "matched": len(self.matched),
                "missing": len(self.missing), "unexpected": len(self.unexpected),
                "shape_mismatched": len(self.shape_mismatched), "skipped": len(self.skipped)}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}


def resolve_weights_file(path: str | Path) -> Path:
    """The weights file named by ``path`` (a file, or a folder holding one of `FOLDER_FILES`)."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in FOLDER_FILES:
            if (path / name).is_file():
                return path / name
        raise MedmmConfigError(path, f"{WHERE}.path is a folder without weights (looked for {', '.join(FOLDER_FILES)})")
    if not path.is_file():
        raise MedmmConfigError(path, f"{WHERE}.path: no such file")
    return path


def _is_safetensors(path: Path) -> bool:
    # safetensors = 8-byte little-endian header length, then a JSON header starting with "{"
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a ``torch.load(weights_only=True)`` state dict (unwrapped)."""
    path = resolve_weights_file(path)
    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file

            raw: Any = load_file(str(path), device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix: one line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MedmmConfigError(path, f"cannot read weights (safetensors or torch.load(weights_only=True) only): "
                               f"{reason[:200]}") from None
    for _ in range(3):  # training checkpoints nest the state dict: {"state_dict": ...}, {"model": ...}
        if isinstance(raw, Mapping) and not any(isinstance(v, torch.Tensor) for v in raw.values()):
            inner = next((raw[k] for k in WRAPPERS if isinstance(raw.get(k), Mapping)), None)
            if inner is None:
                break
            raw = inner
    tensors = {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)} if isinstance(raw, Mapping) else {}
    if not tensors:
        raise MedmmConfigError(path, f"holds no state dict of tensors (top-level keys tried: {', '.join(WRAPPERS)})")
    return tensors


def _rename(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        key = key.replace(old, new)
    return key


def infer_prefix(keys: list[str], target: set[str], renames: tuple[tuple[str, str], ...] = ()) -> str:
    """The prefix under which most file keys name an encoder key ("" when none fits).

    Every dotted split ``prefix + rest`` of every key votes for ``prefix`` when ``rest`` is an
    encoder key; the most voted prefix wins (the shorter one on a tie).
    """
    votes: Counter[str] = Counter()
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts)):
            if _rename(".".join(parts[i:]), renames) in target:
                votes[".".join(parts[:i]) + "." if i else ""] += 1
                break
    if not votes:
        return ""
    return min(votes, key=lambda p: (-votes[p], len(p)))


def map_state_dict(state: Mapping[str, torch.Tensor], model: nn.Module, spec: PretrainedWeights,
                   encoder: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Rename ``state``'s keys for ``model`` and sort them; returns ``(tensors to load, report fields)``."""
    layout = LAYOUTS.get(encoder, _RESNET_LAYOUT)
    renames, skip = layout["renames"], layout["skip"]
    own = model.state_dict()
    prefix = spec.key_prefix if spec.key_prefix is not None else infer_prefix(
        list(state), {k[len(spec.add_prefix):] for k in own if k.startswith(spec.add_prefix)}, renames)
    fields: dict[str, Any] = {"key_prefix": prefix, "matched": [], "unexpected": [], "shape_mismatched": [],
                              "skipped": []}
    load: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            fields["skipped"].append(key)
            continue
        name = spec.add_prefix + _rename(key[len(prefix):], renames)
        if name.startswith(skip):
            fields["skipped"].append(key)
        elif name not in own:
            fields["unexpected"].append(key)
        elif tuple(value.shape) != tuple(own[name].shape):
            fields["shape_mismatched"].append({"key": name, "file_shape": list(value.shape),
                                               "model_shape": list(own[name].shape)})
        else:
            load[name] = value.to(dtype=own[name].dtype)
            fields["matched"].append(name)
    # a BatchNorm's batch counter is bookkeeping, not a weight: files without it load as PyTorch does
    fields["missing"] = [k for k in own if k not in load and not k.endswith("num_batches_tracked")
                         and k not in {m["key"] for m in fields["shape_mismatched"]}]
    return load, fields


def load_encoder_weights(backbone: nn.Module, spec: PretrainedWeights, encoder: str) -> LoadReport:
    """Load ``spec``'s file into ``backbone`` (the MONAI network of the image encoder).

    Raises:
        MedmmConfigError: unreadable file; no key fits; ``strict`` and any key missing, unexpected
            or of another shape (one line naming the file and the counts).
    """
    from medmm.models.pretrained import file_sha256

    path = resolve_weights_file(spec.path)
    load, fields = map_state_dict(read_state_dict(path), backbone, spec, encoder)
    report = LoadReport(file=path.name, sha256=file_sha256(path), encoder=encoder, add_prefix=spec.add_prefix,
                        strict=spec.strict, **fields)
    if not report.matched:
        raise MedmmConfigError(path, f"no key fits the {encoder} image encoder (key_prefix "
                               f"{report.key_prefix!r}; {len(report.unexpected)} unexpected, "
                               f"{len(report.shape_mismatched)} shape-mismatched); is it weights of another network?")
    if spec.strict and report.mismatches:
        examples = (report.missing[:2] + report.unexpected[:2] + [m["key"] for m in report.shape_mismatched[:2]])
        raise MedmmConfigError(path, f"does not fit the {encoder} image encoder exactly: {len(report.missing)} "
                               f"missing, {len(report.unexpected)} unexpected, {len(report.shape_mismatched)} "
                               f"shape-mismatched keys (e.g. {', '.join(examples[:3])}); set {WHERE}.strict: false "
                               "to load the keys that fit")
    merged = backbone.state_dict()
    merged.update(load)
    backbone.load_state_dict(merged, strict=True)
    log.info(report.summary())
    return report


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The `LoadReport.record` of a run dir's report (a resumed run keeps it), None without one."""
    import json

    path = Path(run_dir) / REPORT_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    keys = ("matched", "missing", "unexpected", "shape_mismatched", "skipped")
    return {"file": data["file"], "sha256": data["sha256"], "report": REPORT_FILE, **{k: len(data[k]) for k in keys}}


def write_report(report: LoadReport, run_dir: str | Path) -> Path:
    """``<run_dir>/encoder_weights.json`` (atomic)."""
    import json

    from medmm.io.writers import atomic_write_text

    return atomic_write_text(Path(run_dir) / REPORT_FILE, json.dumps(report.to_dict(), indent=1) + "\n")
