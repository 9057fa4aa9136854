"""Grad-CAM leaves nothing alive behind: a server writes a report per scan for weeks."""

from __future__ import annotations

import gc


def test_heatmaps_release_their_hooks_and_feature_maps(tiny_predictor):
    from medmm.inference.explain import FeatureHead
    from monai.visualize.class_activation_maps import ModelWithHooks

    from inference_helpers import AFFINE, phantom
    from medmm.io import Volume

    result = tiny_predictor.predict(Volume(array=phantom(), affine=AFFINE))

    def alive() -> int:
        gc.collect()
        return sum(isinstance(o, (FeatureHead, ModelWithHooks)) for o in gc.get_objects())

    before = alive()
    for _ in range(3):
        for label in tiny_predictor.labels[:2]:
            result._explainer.heatmap(label)
    assert alive() == before  # each call's hook wrapper, head and cached maps were freed
