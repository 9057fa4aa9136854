"""Cached MONAI datasets over `Case` records for training and validation.

The deterministic part of preprocessing (load, orient, resample, window, crop, fit) runs once and
is cached — in memory (``CacheDataset``) or on disk (`medmm.data.cache.PreparedCache`, one
safetensors file per case, filled ahead of training by ``medmm data prepare`` or on first use) —
and only the random augmentation runs every epoch, so data loading stays a small share of step
time after the first epoch. Whatever the cache mode, a valid prepared entry in ``cache_dir`` is
read instead of preprocessing the case again.

Items are dicts: ``image`` ``[1, X, Y, Z]`` float32, ``label`` ``[L]`` float (1/0/-1 unknown),
``index`` (position in the split, for fixed per-case masks), ``case_id``, ``indication``
(``""`` if none) and ``report`` (``""`` if none; used only as the report generator's target).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from monai.transforms import MapTransform

from medmm.data.cache import PreparedCache, preprocessing_key  # noqa: F401  (preprocessing_key re-exported)
from medmm.data.case import SPLITS
from medmm.data.transforms import (
    PreprocessingConfig,
    augmentation_transforms,
    deterministic_transforms,
    volume_to_metatensor,
)


class LoadVolumed(MapTransform):
    """Load ``data[key]`` (a path) with `medmm.io.load_volume` into a RAS-affine MetaTensor.

    MONAI's ``LoadImaged`` is not used because `medmm.io` owns DICOM/NIfTI/zip reading (series
    selection, geometry checks, de-identification); this adapter hands its `Volume` to MONAI.
    It is a MONAI ``MapTransform`` so ``CacheDataset`` caches through it.
    """

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        from medmm.io import load_volume

        out = dict(data)
        for key in self.key_iterator(out):
            out[key] = volume_to_metatensor(load_volume(out[key]))
        return out


def load_cases(data: Any, check_files: bool = True) -> list[Any]:
    """Cases of the workflow's data source (``WorkflowConfig.data``), with labels in ``data.labels``.

    ``synthetic`` phantoms are generated into ``cache_dir`` on first use and reused afterwards.
    CT-RATE's ``train_*`` volumes are left unassigned so ``val_fraction`` carves a patient-level
    validation split out of them (the release has no validation split; ``valid_*`` is its test set).
    ``check_files=False`` lists cases whose image is missing instead of refusing the whole list
    (``medmm data prepare`` reports them per case).
    """
    from medmm.data.manifest import read_manifest

    if data.source == "synthetic":
        from medmm.data import ensure_synthetic

        s = data.synthetic
        manifest = ensure_synthetic(Path(s.cache_dir).expanduser(), n=s.n, seed=s.seed, size=s.size, fmt=s.format,
                                    counterfactuals=s.counterfactuals, workers=s.workers)
        return read_manifest(manifest, labels=data.labels)
    if data.source == "manifest":
        return read_manifest(Path(data.manifest.path).expanduser(), labels=data.labels, check_files=check_files)
    from medmm.data.ctrate import read_ctrate

    c = data.ctrate
    return read_ctrate(c.volumes_dir, c.labels_csv, c.reports_csv, labels=data.labels,
                       split_map={"train": None, "valid": "test"}, missing="error" if check_files else "skip")


def split_cases(cases: Sequence[Any], val_fraction: float = 0.2, test_fraction: float = 0.0,
                seed: int = 0) -> dict[str, list[Any]]:
    """Group cases into train/val/test by patient.

    Cases that carry a ``split`` keep it; patients with no assigned scan are split by
    `medmm.data.splits.split_patients` (seeded); a patient with one assigned scan puts all their
    unassigned scans in that split too, so one patient never straddles splits.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` in input order within each split.
    """
    from medmm.data.splits import split_patients

    assigned = {c.patient_id: c.split for c in cases if c.split in SPLITS}
    free = {c.patient_id for c in cases if c.split not in SPLITS} - set(assigned)
    if free:
        fractions = (1.0 - val_fraction - test_fraction, val_fraction, test_fraction)
        assigned.update(split_patients(free, fractions, seed))
    out: dict[str, list[Any]] = {name: [] for name in SPLITS}
    for case in cases:
        out[case.split if case.split in SPLITS else assigned[case.patient_id]].append(case)
    return out


def case_items(cases: Sequence[Any], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Dataset items for ``cases``: image path, label vector in ``labels`` order, texts, index."""
    items = []
    for index, case in enumerate(cases):
        values = [case.labels.get(name) for name in labels]
        vector = [-1.0 if value is None else float(value) for value in values]
        items.append({
            "image": str(case.image),
            "label": torch.tensor(vector, dtype=torch.float32),
            "index": index,
            "case_id": str(case.case_id),
            "indication": case.indication or "",
            "report": case.report or "",
        })
    return items


def label_matrix(cases: Sequence[Any], labels: Sequence[str]) -> torch.Tensor:
    """``[N, L]`` float tensor of 1/0/-1 labels."""
    if not cases:
        return torch.zeros(0, len(labels))
    return torch.stack([item["label"] for item in case_items(cases, labels)])


class PreparedImaged(MapTransform):
    """Path in ``data["image"]`` -> preprocessed image, read from a `PreparedCache` when it has it.

    On a miss the case is loaded and preprocessed (`LoadVolumed` + the deterministic transforms,
    fitted to ``roi_size``) and, when ``write``, stored in the cache for the next reader.
    """

    def __init__(self, cfg: PreprocessingConfig, cache: PreparedCache | None = None, write: bool = False,
                 keys: str = "image"):
        from monai.transforms import Compose

        super().__init__(keys)
        self.cache, self.write = cache, write
        self.pipeline = Compose([LoadVolumed(keys), *deterministic_transforms(cfg, fit_roi=True, keys=keys)])

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        key = self.keys[0]
        source = data[key]
        if self.cache is not None:
            hit = self.cache.load(source)
            if hit is not None:
                return {**data, key: hit}
        out = self.pipeline(dict(data))
        if self.cache is not None and self.write:
            self.cache.store(source, out[key])
        return out


def build_dataset(
    cases: Sequence[Any],
    labels: Sequence[str],
    cfg: PreprocessingConfig,
    train: bool,
    cache: Literal["memory", "disk", "none"] = "memory",
    cache_dir: str | Path | None = None,
    seed: int = 0,
    num_workers: int = 0,
    progress: bool = False,
):
    """A MONAI dataset of preprocessed cases, augmented when ``train`` and the config enables it.

    Args:
        cases: `Case` records of one split.
        labels: label order of the ``label`` vectors.
        cfg: preprocessing; images are fitted to ``cfg.roi_size``.
        train: add random augmentation on top of the cached deterministic images.
        cache: ``memory`` (CacheDataset), ``disk`` (entries written to ``cache_dir`` on first use) or
            ``none``.
        cache_dir: the prepared cache (a sub-folder per preprocessing hash); read in every mode when
            given, written only in ``disk`` mode.
        seed: seeds the augmentation (re-seed per epoch with ``reseed``).
        num_workers: threads used to fill the in-memory cache.
        progress: show MONAI's cache-filling progress bar.

    Returns:
        A ``monai.data.Dataset`` whose items are described in the module docstring.
    """
    from monai.data import CacheDataset, Dataset

    items = case_items(cases, labels)
    if cache == "disk" and cache_dir is None:
        raise ValueError("cache='disk' needs a cache_dir")
    prepared = PreparedCache(cache_dir, cfg) if cache_dir is not None else None
    base_transform = PreparedImaged(cfg, prepared, write=cache == "disk")
    if cache == "memory":
        # copy_cache=False is safe: nothing after the cache modifies tensors in place.
        base = CacheDataset(items, transform=base_transform, num_workers=max(1, num_workers), progress=progress,
                            copy_cache=False)
    else:
        base = Dataset(items, transform=base_transform)
    return augmented(base, cfg, seed) if train else base


def augmented(base: Any, cfg: PreprocessingConfig, seed: int = 0) -> Any:
    """``base`` with the config's random augmentation applied per access (``base`` if none).

    A ``Dataset`` over the cached dataset: the deterministic part ran once, only this part runs
    on every access.
    """
    from monai.data import Dataset
    from monai.transforms import Compose

    if not cfg.augmentation.enabled:
        return base
    augment = Compose(augmentation_transforms(cfg))
    augment.set_random_state(seed=seed)
    return Dataset(base, transform=augment)


def reseed(dataset: Any, seed: int) -> None:
    """Re-seed every random transform reachable from ``dataset`` (MONAI ``set_rnd``)."""
    from monai.data.utils import set_rnd

    set_rnd(dataset, seed=seed % (2**32))
