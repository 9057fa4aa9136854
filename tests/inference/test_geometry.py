"""Geometry travels with the image: preprocessing keeps the affine, heatmaps land where the finding is.

The input is deliberately awkward: a left-posterior-inferior, axis-permuted grid with anisotropic
spacing and an offset origin, inside air that the foreground crop removes, resampled to 2 mm.
"""

from __future__ import annotations

import numpy as np
import pytest

from medmm.config import PreprocessingConfig
from medmm.data.transforms import grid_affine, preprocess_volume
from medmm.inference.explain import to_input_grid
from medmm.io import Volume

BLOB = (30, 9, 7)  # voxel index of the bright spot in the input


def _awkward_volume() -> Volume:
    shape = (40, 24, 18)
    hu = np.full(shape, -1000.0, np.float32)
    hu[12:36, 4:20, 3:15] = 40.0  # the body: air around it is cropped away
    hu[BLOB[0] - 1:BLOB[0] + 2, BLOB[1] - 1:BLOB[1] + 2, BLOB[2] - 1:BLOB[2] + 2] = 1000.0
    # voxel axes: i runs posterior (1.2 mm), j runs left (0.8 mm), k runs inferior (3 mm)
    affine = np.array([[0.0, -0.8, 0.0, 40.0],
                       [-1.2, 0.0, 0.0, 25.0],
                       [0.0, 0.0, -3.0, -10.0],
                       [0.0, 0.0, 0.0, 1.0]])
    return Volume(hu, affine)


def _world(affine: np.ndarray, index) -> np.ndarray:
    return (affine @ np.r_[np.asarray(index, dtype=np.float64), 1.0])[:3]


CFG = PreprocessingConfig(spacing=(2.0, 2.0, 2.0), hu_window=(-1000, 1000), crop_foreground=True,
                          foreground_hu=-500)


def test_preprocessing_keeps_an_affine_that_follows_crop_resample_and_reorientation():
    volume = _awkward_volume()
    image = preprocess_volume(volume, CFG)
    affine = grid_affine(image)
    assert np.allclose(np.abs(affine[:3, :3]), np.diag([2.0, 2.0, 2.0]), atol=1e-6)  # RAS, 2 mm
    assert np.all(np.diag(affine[:3, :3]) > 0)
    assert image.shape[1] < 40 * 0.8 / 2 + 1  # cropped: fewer voxels than the whole field of view
    found = np.unravel_index(int(np.argmax(image[0].numpy())), image.shape[1:])
    assert np.linalg.norm(_world(affine, found) - _world(volume.affine, BLOB)) <= np.sqrt(3) * 2.0


def test_a_heatmap_on_the_model_grid_lands_on_the_finding_in_the_input():
    volume = _awkward_volume()
    image = preprocess_volume(volume, CFG)
    heat = np.clip(image[0].numpy() - 0.6, 0, None)  # a "heatmap" that lights the bright spot only
    on_input = to_input_grid(heat, grid_affine(image), volume.shape, volume.affine)
    assert on_input.shape == volume.shape
    peak = np.unravel_index(int(np.argmax(on_input)), volume.shape)
    assert np.max(np.abs(np.subtract(peak, BLOB))) <= 1
    assert on_input[:6].max() == 0  # the cropped-away air gets nothing


def test_predictor_explanations_carry_the_cropped_grid_and_map_back_to_the_input(tmp_path):
    from inference_helpers import TinyModel, tiny_meta

    import torch

    from medmm.inference import Predictor
    from medmm.knowledge import load_ontology

    meta = tiny_meta(spacing=(2.0, 2.0, 2.0), crop_foreground=True, foreground_hu=-500)
    predictor = Predictor(TinyModel(), meta, tmp_path, "best", torch.device("cpu"), load_ontology())
    volume = _awkward_volume()
    result = predictor.predict(volume)
    expected = grid_affine(preprocess_volume(volume, meta.preprocessing))
    explainer = result._explainer
    model_heat = explainer.heatmap(predictor.labels[0])
    assert np.allclose(model_heat.affine, expected) and np.allclose(result.image_affine, expected)
    input_heat = explainer.heatmap(predictor.labels[0], grid="input")
    assert input_heat.shape == volume.shape and np.allclose(input_heat.affine, volume.affine)
    # the same world point has the same heat on both grids
    i_model = np.unravel_index(int(np.argmax(model_heat.array)), model_heat.shape)
    i_input = np.round(np.linalg.solve(volume.affine, np.r_[_world(expected, i_model), 1.0])[:3]).astype(int)
    if all(0 <= i < n for i, n in zip(i_input, volume.shape)):
        assert input_heat.array[tuple(i_input)] == pytest.approx(model_heat.array[i_model], abs=0.15)
