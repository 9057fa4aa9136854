"""``medmm serve``: a diagnosis service a hospital can plug into its PACS.

HTTP API (:mod:`~medmm.serve.app`), DICOM node (:mod:`~medmm.serve.dicom_node`), durable jobs
(:mod:`~medmm.serve.store`), workers (:mod:`~medmm.serve.worker`), bearer tokens
(:mod:`~medmm.serve.tokens`), rate limits (:mod:`~medmm.serve.ratelimit`), Prometheus metrics
(:mod:`~medmm.serve.metrics`), drift (:mod:`~medmm.serve.drift`), audit log
(:mod:`~medmm.serve.audit`) and the ``serve.yaml`` schema (:mod:`~medmm.serve.config`). All model
work goes through :mod:`medmm.inference`. Needs the ``medmm[serve]`` extra.

>>> from medmm.serve import load_serve_config, run_server          # doctest: +SKIP
>>> run_server(load_serve_config("serve.yaml", {"model": "runs/demo"}))  # doctest: +SKIP
"""

from __future__ import annotations

from medmm.serve.config import ServeConfig, load_serve_config

__all__ = ["ServeConfig", "load_serve_config", "run_server", "create_app", "Service"]


def __getattr__(name: str):
    # FastAPI/uvicorn/pynetdicom load only when the server is really used
    if name == "run_server":
        from medmm.serve.server import run_server

        return run_server
    if name == "create_app":
        from medmm.serve.app import create_app

        return create_app
    if name == "Service":
        from medmm.serve.service import Service

        return Service
    raise AttributeError(name)
