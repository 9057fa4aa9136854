"""Evidence maps: the 'no localised evidence' test, peaks and key slices, the evidence methods."""

from __future__ import annotations

import numpy as np
import pytest

from medmm.inference.evidence import METHODS, localisation
from medmm.inference.result import Explanation


def _blob(shape=(24, 24, 24), centre=(6, 15, 9), sigma=2.0) -> np.ndarray:
    grid = np.indices(shape).astype(np.float32)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
    return np.exp(-d2 / (2 * sigma**2)).astype(np.float32)


def test_empty_and_flat_maps_are_not_evidence():
    assert not localisation(np.zeros((8, 8, 8))).localised  # Grad-CAM of the 2x2x2 map: all zero
    assert localisation(np.zeros((8, 8, 8))).peak is None
    assert not localisation(np.full((8, 8, 8), 0.7)).localised
    ramp = np.broadcast_to(np.linspace(0, 1, 16)[:, None, None], (16, 16, 16))  # smooth body-wide gradient
    flat = localisation(ramp)
    assert not flat.localised and "flat" in flat.reason
    assert not localisation(np.full((4, 4, 4), np.nan)).localised


def test_a_focal_blob_is_localised_at_its_peak():
    loc = localisation(_blob())
    assert loc.localised and loc.peak == (6, 15, 9)
    assert loc.peak_to_mean > 10 and loc.half_max_fraction < 0.01


def test_explanation_has_no_peak_without_evidence():
    from medmm.io import Volume

    flat = Volume(array=np.zeros((8, 8, 8), np.float32), affine=np.eye(4), meta={})
    exp = Explanation("Cardiomegaly", flat, 0.9, [], method="gradcam", localisation=localisation(flat.array))
    assert exp.peak_index() is None and not exp.localised  # never slice 0 by default
    assert exp.summary()["statement"] == "no localised evidence"
    blob = Volume(array=_blob(), affine=np.eye(4), meta={})
    exp = Explanation("Lung nodule", blob, 0.9, [], localisation=localisation(blob.array))
    assert exp.peak_index() == (6, 15, 9) and exp.summary()["localised"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_a_map_on_the_image_grid(tiny_predictor, scans, method):
    tiny_predictor.evidence_method = method
    result = tiny_predictor.predict(scans["nifti"])
    exp = result.explain(result.labels[0])
    heat = np.asarray(exp.heatmap.array)
    assert heat.shape == tuple(result.preprocessed["shape"])
    assert np.all(np.isfinite(heat)) and heat.min() >= 0.0 and heat.max() <= 1.0 + 1e-6
    # the tiny stand-in has no ResNet stages: layer Grad-CAM falls back to the feature-map Grad-CAM, and says so
    assert exp.method == ("gradcam" if method.startswith("gradcam") else method)
    assert exp.site_check is not None and exp.site_check["site"] is not None
    if exp.localised:
        assert exp.peak_index() == tuple(int(v) for v in np.unravel_index(np.argmax(heat), heat.shape))


def test_occlusion_finds_the_voxels_a_model_reads():
    """A model whose logit is the texture (std) of one block: occlusion evidence lies in that block."""
    import torch

    from medmm.inference.evidence import occlusion_drops

    class BlockModel(torch.nn.Module):
        def feature_map(self, x):
            return x[:, :, 8:16, 0:8, 0:8].flatten(2).std(dim=2)[..., None, None, None] * 10.0

        def predict_step(self, feature_map, **kwargs):
            return type("Out", (), {"logits": feature_map.flatten(1)})()

    x = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    drops = occlusion_drops(BlockModel(), x, None, blocks=2)
    assert drops.shape == (1, 16, 16, 16)
    inside = drops[0, 8:16, 0:8, 0:8]
    assert inside.min() > 0 and drops[0, 0:8].max() == 0.0


def test_images_smaller_than_the_roi_are_padded_and_cropped_back():
    """Input-gradient methods pad a tiny volume to the ROI (a 5x6x8 backward segfaulted the CPU
    pooling kernels) and crop the map back to the image."""
    import torch

    from medmm.inference.evidence import padded_to

    image = torch.arange(5 * 6 * 8, dtype=torch.float32).reshape(1, 1, 5, 6, 8)
    padded, crop = padded_to(image, (16, 16, 16))
    assert tuple(padded.shape) == (1, 1, 16, 16, 16)
    assert torch.equal(padded[(0, 0, *crop)], image[0, 0])
    assert float(padded.min()) == float(image.min())  # pad with the image's own minimum (air)
    same, whole = padded_to(image, None)
    assert same is image and torch.equal(same[(0, 0, *whole)], image[0, 0])
    larger, crop = padded_to(image, (4, 8, 8))  # only the too-small axis grows
    assert tuple(larger.shape[2:]) == (5, 8, 8) and torch.equal(larger[(0, 0, *crop)], image[0, 0])
