"""Scaling past one process with Ray (the ``medmm[ray]`` extra): cohort inference on a cluster.

Training across machines stays ``torchrun`` (see docs/scale.md); the Ray Serve deployment of
``medmm serve`` lives in :mod:`medmm.serve.ray_serve`.
"""

from medmm.scale.ray_batch import RayBatch, RaySettings, connect, import_ray, run_batch_ray

__all__ = ["RayBatch", "RaySettings", "connect", "import_ray", "run_batch_ray"]
