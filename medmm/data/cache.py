"""On-disk cache of preprocessed training images: one safetensors file per case.

``medmm data prepare`` fills it in parallel; the training loader (`medmm.data.dataset`) reads it
whenever a valid entry exists and falls back to on-the-fly preprocessing otherwise.

An entry lives at ``<cache_dir>/<preprocessing key>/<entry key>.safetensors``:

* the folder is named by `preprocessing_key` (a hash of the deterministic preprocessing), so any
  change of spacing, window, crop or ROI uses a fresh folder;
* the entry key hashes the cache format, the preprocessing key and the source's *fingerprint*
  (resolved path, size and modification time of the file, or of every file under a DICOM folder),
  so a replaced or edited volume misses. Hashing 150 MB of voxels on every epoch would cost more
  than the preprocessing it saves; size + mtime is what ``make`` and ``rsync`` rely on too.

Entries are written atomically (temporary file + ``os.replace``), so a killed writer never leaves
a half-written entry behind, and several processes (workers, machines on a shared disk, DDP ranks)
may fill the same cache. The file holds no path or case id (no PHI), only the tensor and the
preprocessing key it was made with, which is checked on read.

MONAI's ``PersistentDataset`` (used here before) is not reused: it keys an entry on the whole
item dict (labels and report text included, so relabelling a case re-preprocesses its volume and
``prepare`` would need the labels), ignores changes of the file behind a path, and cannot tell a
valid entry from its header, which a fast resume of a large cache needs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from medmm.config.preprocessing import PreprocessingConfig

CACHE_FORMAT = "medmm-prepared-1"
SUFFIX = ".safetensors"
CONFIG_FILE = "preprocessing.json"


def preprocessing_key(cfg: PreprocessingConfig) -> str:
    """Short hash of the deterministic preprocessing (names the on-disk cache folder)."""
    settings = cfg.model_dump(mode="json", exclude={"augmentation", "fit_at_inference"})
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def source_fingerprint(path: str | Path) -> str:
    """Resolved path + size + mtime of a file, or of every file under a folder (sorted)."""
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        parts = [str(p)]
        for root, dirs, files in os.walk(p):
            dirs.sort()
            for name in sorted(files):
                st = os.stat(os.path.join(root, name))
                parts.append(f"{os.path.relpath(os.path.join(root, name), p)}:{st.st_size}:{st.st_mtime_ns}")
        return "\n".join(parts)
    st = p.stat()  # FileNotFoundError for a missing source: the caller reports it
    return f"{p}:{st.st_size}:{st.st_mtime_ns}"


class PreparedCache:
    """The cache folder of one preprocessing configuration.

    Args:
        root: the workflow's ``training.cache_dir``.
        cfg: the preprocessing whose output is cached.
    """

    def __init__(self, root: str | Path, cfg: PreprocessingConfig):
        self.key = preprocessing_key(cfg)
        self.folder = Path(root).expanduser() / self.key
        self.roi_size = tuple(cfg.roi_size) if cfg.roi_size is not None else None
        self._cfg_json = json.dumps(cfg.model_dump(mode="json", exclude={"augmentation", "fit_at_inference"}),
                                    indent=2, sort_keys=True)

    def entry(self, source: str | Path) -> Path:
        """Path of the entry of ``source`` (raises OSError when the source is missing)."""
        digest = hashlib.sha256(f"{CACHE_FORMAT}\n{self.key}\n{source_fingerprint(source)}".encode()).hexdigest()
        return self.folder / f"{digest[:32]}{SUFFIX}"

    def load(self, source: str | Path) -> torch.Tensor | None:
        """The cached image of ``source`` or None (no entry, a changed source, an unreadable entry)."""
        try:
            path = self.entry(source)
        except OSError:
            return None
        if not path.is_file():
            return None
        return read_entry(path, self.key, self.roi_size)

    def has(self, source: str | Path) -> bool:
        """Whether a valid entry exists, checked from its header only (no voxels read: fast resume)."""
        try:
            path = self.entry(source)
        except OSError:
            return False
        return path.is_file() and read_entry(path, self.key, self.roi_size, header_only=True) is not None

    def store(self, source: str | Path, image: torch.Tensor) -> Path:
        """Write ``image`` as the entry of ``source`` atomically; returns the entry path."""
        from safetensors.torch import save

        from medmm.io.writers import atomic_write_bytes, atomic_write_text

        path = self.entry(source)
        tensor = torch.as_tensor(image).detach().to(torch.float32).contiguous()
        tensor = tensor.as_subclass(torch.Tensor) if type(tensor) is not torch.Tensor else tensor
        blob = save({"image": tensor}, metadata={"format": CACHE_FORMAT, "preprocessing": self.key})
        if not (self.folder / CONFIG_FILE).exists():
            atomic_write_text(self.folder / CONFIG_FILE, self._cfg_json + "\n")
        return atomic_write_bytes(path, blob)

    def size_bytes(self) -> int:
        """Total size of the entries in this folder."""
        return sum(p.stat().st_size for p in self.folder.glob(f"*{SUFFIX}")) if self.folder.is_dir() else 0

    def entries(self) -> int:
        """Number of entries in this folder."""
        return sum(1 for _ in self.folder.glob(f"*{SUFFIX}")) if self.folder.is_dir() else 0


def read_entry(path: Path, key: str, roi_size: tuple[int, ...] | None,
               header_only: bool = False) -> torch.Tensor | bool | None:
    """The image in an entry file (``True`` if ``header_only``), or None when unreadable or made differently.

    safetensors checks on open that the header's offsets match the file size, so a truncated file
    is caught by the header check too.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta: dict[str, Any] = fh.metadata() or {}
            if meta.get("format") != CACHE_FORMAT or meta.get("preprocessing") != key:
                return None
            shape = tuple(fh.get_slice("image").get_shape())
            if len(shape) != 4 or shape[0] != 1 or (roi_size is not None and shape[1:] != roi_size):
                return None
            return True if header_only else fh.get_tensor("image")
    except Exception:  # noqa: BLE001 - a damaged entry is a cache miss, recomputed and rewritten
        return None
