"""Histogram-channel cache: same feature maps as computing them, once per case, within its budget."""

from __future__ import annotations

import pytest
import torch

from medmm.models import ImageEncoder, ImageEncoderConfig
from medmm.models.config import ContextHistogramConfig
from medmm.training import train
from medmm.training.histogram_cache import HistogramCache
from medmm.training.rundir import read_jsonl

from training_helpers import interrupt_then_resume, tiny_workflow

CENTRES = [0.0, 0.1, 0.25, 0.5, 1.0]


def _encoder(histograms: bool = True) -> ImageEncoder:
    torch.manual_seed(0)
    extra = dict(histogram_centres=CENTRES,
                 context_histogram=ContextHistogramConfig(hu=[0, 1], context_hu=[0, 1], centres=CENTRES,
                                                          context_centres=[0.0, 0.5, 1.0], context_voxels=[3]))
    return ImageEncoder(ImageEncoderConfig(widths=[4, 8, 8, 8], embed_dim=16, **(extra if histograms else {}))).eval()


def _images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))


def test_cached_feature_map_equals_the_computed_one_and_is_stored_once_per_case():
    enc, x = _encoder(), _images()
    cache = HistogramCache(enc, max_bytes=2**30)
    with torch.no_grad():
        expected = enc.feature_map(x)
        first = enc.feature_map(x, cache.lookup(x, ["a", "b", "c"]))
        assert len(cache) == 3 and cache.nbytes > 0
        stored = dict(cache._store)
        # second epoch, other batch order: the stored tensors are reused, not recomputed
        again = enc.feature_map(x[[2, 0]], cache.lookup(x[[2, 0]], ["c", "a"]))
    torch.testing.assert_close(first, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(again, expected[[2, 0]], rtol=0, atol=1e-6)
    assert len(cache) == 3 and all(cache._store[k] is v for k, v in stored.items())


def test_a_case_is_looked_up_by_its_id_not_its_pixels():
    """The cache trusts the case id: the engine only uses it for images that never change."""
    enc, x = _encoder(), _images(2)
    cache = HistogramCache(enc, max_bytes=2**30)
    with torch.no_grad():
        enc.feature_map(x[:1], cache.lookup(x[:1], ["a"]))
        reused = enc.feature_map(x[1:], cache.lookup(x[1:], ["a"]))
        fresh = enc.feature_map(x[1:])
    hist = slice(enc.channels, None)
    assert not torch.allclose(reused[:, hist], fresh[:, hist])


def test_over_budget_cases_are_computed_but_not_stored():
    enc, x = _encoder(), _images(2)
    cache = HistogramCache(enc, max_bytes=0)
    with torch.no_grad():
        out = enc.feature_map(x, cache.lookup(x, ["a", "b"]))
        expected = enc.feature_map(x)
    assert len(cache) == 0 and cache.nbytes == 0
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_encoder_without_histograms_passes_through():
    enc, x = _encoder(histograms=False), _images(2)
    cache = HistogramCache(enc, max_bytes=2**30)
    assert not enc.has_histograms and enc.histogram_maps(x, (2, 2, 2)) is None
    with torch.no_grad():
        torch.testing.assert_close(enc.feature_map(x, cache.lookup(x, ["a", "b"])), enc.feature_map(x))
    assert len(cache) == 0


def test_lookup_needs_one_case_id_per_image():
    enc, x = _encoder(), _images(2)
    with pytest.raises(ValueError, match="one case id per image"):
        HistogramCache(enc, max_bytes=2**30).lookup(x, ["a"])


def _histogram_workflow(manifest, **extra):
    return tiny_workflow(manifest, **{
        "preprocessing.augmentation": {"flip_prob": 0.0},
        "network.image_encoder.histogram_hu": [-1000, -500, 0, 200],
        "network.image_encoder.context_histogram": {"hu": [-1000, 0, 200], "context_hu": [-1000, 0, 200],
                                                     "context_voxels": [3]},
        "training.epochs": 2, **extra})


@pytest.mark.slow
def test_training_with_the_cache_matches_training_without_it(tiny_manifest, tmp_path, monkeypatch):
    images_histogrammed = []
    original = ImageEncoder.histogram_maps

    def counting(self, x, grid):
        images_histogrammed[-1] += x.shape[0]
        return original(self, x, grid)

    monkeypatch.setattr(ImageEncoder, "histogram_maps", counting)
    images_histogrammed.append(0)
    cached = train(_histogram_workflow(tiny_manifest), run_dir=tmp_path / "cached", verbose=False)
    images_histogrammed.append(0)
    plain = train(_histogram_workflow(tiny_manifest, **{"training.histogram_cache_mb": 0}),
                  run_dir=tmp_path / "plain", verbose=False)
    # 2 epochs over 12 cases: without the cache every epoch histograms every image again
    assert images_histogrammed[1] >= 24 and images_histogrammed[0] <= images_histogrammed[1] - 12
    a, b = read_jsonl(cached.run_dir / "metrics.jsonl"), read_jsonl(plain.run_dir / "metrics.jsonl")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4)
        assert ra["val_bce"] == pytest.approx(rb["val_bce"], rel=1e-4)


@pytest.mark.slow
def test_resume_with_cached_histograms_matches_an_uninterrupted_run(tiny_manifest, tmp_path, monkeypatch):
    """The cache starts empty after a resume and the normalisers' cumulative averages continue
    from the checkpoint: the resumed run writes the same metrics as the straight one."""
    straight = train(_histogram_workflow(tiny_manifest), run_dir=tmp_path / "straight", verbose=False)
    _, _, resumed = interrupt_then_resume(_histogram_workflow(tiny_manifest), tmp_path / "r", monkeypatch)
    assert [r["epoch"] for r in resumed.metrics] == [1, 2]
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == (straight.run_dir / "metrics.jsonl").read_text()
