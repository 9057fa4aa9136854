"""A run's own data: its resolved workflow and the training scans it was trained on.

Calibration (int8) and distillation targets use the source run's training split, rebuilt exactly
as training built it (`medmm.data.dataset.load_cases` + `split_cases` with the run's seed), so
compression never looks at validation or test scans.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import torch

from medmm.errors import MedmmConfigError


def run_workflow(meta: Any, where: str) -> Any:
    """The run's resolved `WorkflowConfig` (``RunMeta.workflow``)."""
    workflow = getattr(meta, "workflow", None)
    if workflow is None:
        raise MedmmConfigError(where, "stores no resolved workflow; compressing needs the run's own data and settings")
    return workflow


def split_of(workflow: Any, split: str = "train") -> list[Any]:
    """Cases of one split of the workflow's data, as training split them."""
    from medmm.data.dataset import load_cases, split_cases

    data = workflow.data
    splits = split_cases(load_cases(data), data.val_fraction, data.test_fraction, workflow.seed)
    return list(splits[split])


def preprocessed(workflow: Any, case: Any) -> torch.Tensor:
    """``[1, C, X, Y, Z]`` image of a case, preprocessed exactly as at inference."""
    from medmm.data.transforms import preprocess_volume
    from medmm.io import load_volume

    image = preprocess_volume(load_volume(case.image), workflow.preprocessing)
    image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
    return image[None].float()


def calibration_images(workflow: Any, n: int, seed: int = 0) -> Iterator[torch.Tensor]:
    """``n`` training scans (a seeded sample of the training split), cropped to the ROI when larger."""
    cases = split_of(workflow, "train")
    chosen = random.Random(seed).sample(cases, min(n, len(cases)))
    roi = list(workflow.preprocessing.roi_size)
    for case in chosen:
        image = preprocessed(workflow, case)
        starts = [max(0, (s - r) // 2) for s, r in zip(image.shape[2:], roi)]
        yield image[:, :, starts[0]:starts[0] + roi[0], starts[1]:starts[1] + roi[1], starts[2]:starts[2] + roi[2]]
