"""A learned report labeler: a BERT-style encoder fine-tuned to the findings, for users who have some
manually labelled reports (CT-RATE's labels came from such a classifier trained on ~1,000 manual
annotations). Same call as the rule labeler: ``labeler(text) -> {finding: 0/1}``.

A labeler folder holds ``encoder/`` (``save_pretrained``: safetensors weights, config, tokenizer),
``head.safetensors`` (the linear layer over the mean-pooled tokens) and ``labeler.json`` (labels,
per-finding thresholds, max length, base model and its weights' sha256, training record). No pickle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medmm.errors import MedmmConfigError, MedmmInputError

FORMAT = "medmm-learned-labeler"
VERSION = 1
CONFIG_FILE, HEAD_FILE, ENCODER_DIR = "labeler.json", "head.safetensors", "encoder"


class LabelerNet(nn.Module):
    """Encoder → mean pooling over the attention mask → dropout → one logit per finding."""

    def __init__(self, encoder: nn.Module, n_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(encoder.config.hidden_size), n_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        from medmm.models.text_encoder import mean_pool

        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        return self.head(self.dropout(mean_pool(hidden, attention_mask)))


class LearnedLabeler:
    """Fine-tuned encoder + thresholds → ``{finding: 0/1}`` per report.

    Args:
        net: the :class:`LabelerNet`.
        tokenizer: its tokenizer.
        labels: finding names, in the order of the head's outputs.
        thresholds: per-finding decision thresholds on the sigmoid probability.
        max_length: tokens per report (longer reports are truncated).
        meta: the rest of ``labeler.json`` (base model, training record).
    """

    def __init__(self, net: LabelerNet, tokenizer: Any, labels: Sequence[str], thresholds: Sequence[float],
                 max_length: int, meta: dict[str, Any] | None = None):
        self.net = net.eval()
        self.tokenizer = tokenizer
        self.labels = tuple(labels)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.max_length = int(max_length)
        self.meta = dict(meta or {})

    def __repr__(self) -> str:
        return f"LearnedLabeler(labels={len(self.labels)}, base={self.meta.get('base_model')!r}, max_length={self.max_length})"

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(["" if t is None else str(t) for t in texts], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt"))

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """``[N, L]`` probabilities."""
        self.net.eval()
        device = next(self.net.parameters()).device
        out = [np.zeros((0, len(self.labels)))]
        for i in range(0, len(texts), batch_size):
            batch = {k: v.to(device) for k, v in self.encode(texts[i:i + batch_size]).items()}
            out.append(torch.sigmoid(self.net(**batch)).double().cpu().numpy())
        return np.concatenate(out)

    def label_many(self, texts: Sequence[str], batch_size: int = 32) -> list[dict[str, int]]:
        """Labels of many reports (batched)."""
        decisions = self.predict_proba(list(texts), batch_size) > self.thresholds
        return [{lab: int(row[j]) for j, lab in enumerate(self.labels)} for row in decisions]

    def label(self, text: str | None) -> dict[str, int]:
        """Labels of one report: 1 where the probability exceeds the finding's threshold."""
        return self.label_many([text or ""])[0]

    __call__ = label

    # ---------------------------------------------------------------------------- save / load
    def save(self, folder: str | Path) -> Path:
        """Write the labeler folder (safetensors + JSON only)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.net.encoder.save_pretrained(folder / ENCODER_DIR, safe_serialization=True)
        self.tokenizer.save_pretrained(folder / ENCODER_DIR)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.net.head.state_dict().items()}, str(folder / HEAD_FILE))
        config = {**self.meta, "format": FORMAT, "version": VERSION, "labels": list(self.labels),
                  "thresholds": {lab: float(t) for lab, t in zip(self.labels, self.thresholds)},
                  "max_length": self.max_length, "pooling": "mean"}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return folder

    def save_atomic(self, folder: str | Path) -> Path:
        """:meth:`save` into a temporary sibling folder, then rename it into place (replacing an
        earlier labeler folder; refusing any other non-empty folder)."""
        import os
        import shutil
        import tempfile

        folder = Path(folder)
        if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / CONFIG_FILE).is_file())):
            raise MedmmInputError(folder, "exists and is neither empty nor a labeler folder; choose another --out")
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        except OSError as err:
            raise MedmmInputError(folder, f"cannot write ({err.strerror or type(err).__name__})") from None
        try:
            self.save(tmp)
            old = None
            if folder.exists():
                old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
                os.replace(folder, old)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> LearnedLabeler:
        """Load a labeler folder written by :meth:`save` (``from_pretrained``, offline).

        Raises:
            MedmmInputError: not a labeler folder / unreadable files.
            MedmmConfigError: a config that does not match the weights.
        """
        from safetensors.torch import load_file

        from medmm.models.pretrained import load_encoder, load_tokenizer

        folder = Path(folder)
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise MedmmInputError(folder, f"not a learned labeler folder (no {CONFIG_FILE}); use 'rules' or a folder "
                                          "written by 'medmm labeler train'")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise MedmmInputError(config_path, f"unreadable ({type(err).__name__})") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise MedmmInputError(config_path, f"not a {FORMAT} config")
        if config.get("version") != VERSION:
            raise MedmmConfigError(config_path, f"version {config.get('version')!r} is not supported (expected {VERSION})")
        labels = list(config.get("labels") or [])
        thresholds = config.get("thresholds") or {}
        if not labels or set(thresholds) != set(labels):
            raise MedmmConfigError(config_path, "labels and thresholds do not match")
        where = str(folder / ENCODER_DIR)
        encoder = load_encoder(where, where=where)
        tokenizer = load_tokenizer(where, where=where)
        net = LabelerNet(encoder, len(labels))
        try:
            head = load_file(str(folder / HEAD_FILE))
            net.head.load_state_dict(head)
        except (OSError, RuntimeError, KeyError) as err:
            raise MedmmConfigError(folder / HEAD_FILE, f"head weights do not fit {len(labels)} labels "
                                                       f"({' '.join(str(err).split())[:120]})") from None
        meta = {k: v for k, v in config.items() if k not in ("labels", "thresholds", "max_length", "format", "version")}
        return cls(net.to(device), tokenizer, labels, [float(thresholds[lab]) for lab in labels],
                   int(config.get("max_length", 256)), meta)


def load_labeler(spec: str | Path, ontology: Any = None, labels: Sequence[str] | None = None) -> Any:
    """``"rules"`` → the ontology :class:`~medmm.knowledge.ReportLabeler`; a folder → :class:`LearnedLabeler`."""
    if str(spec) == "rules":
        from medmm.knowledge import ReportLabeler, load_ontology
        from medmm.labels import CT_RATE_FINDINGS

        return ReportLabeler(ontology or load_ontology(), labels or CT_RATE_FINDINGS)
    path = Path(spec)
    if not path.is_dir():
        raise MedmmInputError(path, "labeler must be 'rules' or a folder written by 'medmm labeler train'")
    return LearnedLabeler.load(path)
