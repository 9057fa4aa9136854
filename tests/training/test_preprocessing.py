"""MONAI preprocessing pipeline (medmm.data.transforms) and cached datasets (medmm.data.dataset)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmm.data.dataset import augmented, build_dataset, case_items, reseed, split_cases
from medmm.data.transforms import PreprocessingConfig, augmentation_transforms, preprocess_volume
from medmm.io import Volume


def _volume(shape=(20, 24, 16), spacing=(2.0, 1.5, 2.5), flip_x=True, seed=0):
    rng = np.random.default_rng(seed)
    array = rng.uniform(-1000, 500, shape).astype(np.float32)
    affine = np.diag([-spacing[0] if flip_x else spacing[0], spacing[1], spacing[2], 1.0])
    return Volume(array, affine)


@pytest.mark.parametrize("spacing, expected_shape", [
    ((2.0, 2.0, 2.0), (20, 18, 20)),
    (None, (20, 24, 16)),
    ((4.0, 3.0, 5.0), (10, 12, 8)),
])
def test_preprocess_volume_resamples_and_windows(spacing, expected_shape):
    cfg = PreprocessingConfig(spacing=spacing, hu_window=(-1000, 1000), intensity_range=(0, 1))
    x = preprocess_volume(_volume(), cfg)
    assert x.dtype == torch.float32 and tuple(x.shape) == (1, *expected_shape)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_orientation_to_ras_flips_an_las_volume():
    vol = _volume(flip_x=True)  # affine with negative x: voxel i runs right -> left
    x = preprocess_volume(vol, PreprocessingConfig(spacing=None, hu_window=(-1000, 1000)))
    expected = (np.clip(vol.array, -1000, 1000) + 1000) / 2000
    np.testing.assert_allclose(x[0].numpy(), expected[::-1], atol=1e-6)


@pytest.mark.parametrize("fit", ["pad_crop", "resize"])
def test_fit_to_roi_only_when_asked(fit):
    cfg = PreprocessingConfig(spacing=None, roi_size=(16, 16, 16), fit=fit)
    assert tuple(preprocess_volume(_volume(), cfg).shape) == (1, 20, 24, 16)
    cfg_fit = cfg.model_copy(update={"fit_at_inference": True})
    assert tuple(preprocess_volume(_volume(), cfg_fit).shape) == (1, 16, 16, 16)


def test_foreground_crop_removes_air():
    vol = _volume(shape=(24, 24, 24), flip_x=False)
    vol.array[:] = -1000.0
    vol.array[6:14, 8:20, 4:10] = 40.0
    cfg = PreprocessingConfig(spacing=None, crop_foreground=True, foreground_hu=-500)
    assert tuple(preprocess_volume(vol, cfg).shape) == (1, 8, 12, 6)


def test_preprocess_accepts_the_stored_dict():
    cfg = PreprocessingConfig(spacing=(2, 2, 2), roi_size=(8, 8, 8))
    as_dict = cfg.model_dump(mode="json")
    assert torch.equal(preprocess_volume(_volume(), cfg), preprocess_volume(_volume(), as_dict))


def test_augmentation_is_seeded():
    cfg = PreprocessingConfig(spacing=None, roi_size=(16, 16, 16),
                              augmentation={"flip_prob": 0.5, "affine_prob": 0.5, "noise_prob": 0.5})
    from monai.transforms import Compose

    image = preprocess_volume(_volume(), cfg.model_copy(update={"fit_at_inference": True})).as_tensor()
    outs = [Compose(augmentation_transforms(cfg)).set_random_state(seed=s)({"image": image.clone()})["image"]
            for s in (3, 3, 4)]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


class _Case:
    def __init__(self, i, image, split=None, patient=None):
        self.case_id, self.patient_id, self.image, self.split = f"c{i}", patient or f"p{i}", image, split
        self.report, self.indication = f"report {i}", None
        self.labels = {"A": i % 2, "B": -1}


def test_split_by_patient_keeps_manifest_splits():
    cases = [_Case(i, "x", patient=f"p{i // 2}") for i in range(20)] + [_Case(99, "x", split="test", patient="q")]
    splits = split_cases(cases, val_fraction=0.25, seed=1)
    assert splits["test"][-1].case_id == "c99"
    owners = {c.patient_id: name for name, cs in splits.items() for c in cs}
    for name, cs in splits.items():
        assert all(owners[c.patient_id] == name for c in cs)
    assert len(splits["val"]) > 0 and len(splits["train"]) > len(splits["val"])


def test_cached_dataset_items(tmp_path):
    from medmm.io import write_nifti

    cases = []
    for i in range(3):
        vol = _volume(seed=i, flip_x=False)
        write_nifti(vol.array, vol.affine, tmp_path / f"v{i}.nii.gz")
        cases.append(_Case(i, str(tmp_path / f"v{i}.nii.gz")))
    cfg = PreprocessingConfig(spacing=None, roi_size=(16, 16, 16), augmentation={"flip_prob": 1.0})
    items = case_items(cases, ["A", "B"])
    assert items[1]["label"].tolist() == [1.0, -1.0] and items[0]["indication"] == ""
    for cache in ("memory", "disk", "none"):
        base = build_dataset(cases, ["A", "B"], cfg, train=False, cache=cache, cache_dir=tmp_path / "c")
        item = base[1]
        assert tuple(item["image"].shape) == (1, 16, 16, 16) and item["case_id"] == "c1"
    aug = augmented(base, cfg, seed=0)
    reseed(aug, 5)
    assert torch.equal(aug[0]["image"], torch.flip(base[0]["image"], dims=[1]))
    assert any((tmp_path / "c").rglob("*.safetensors"))  # disk cache written
