"""HTTP API of ``medmm serve`` (FastAPI): jobs, synchronous predict, artefacts, health, metrics.

Every error is JSON ``{"error": "<one line>"}`` with 400 (bad input, the same checks as ``medmm
infer``), 401 (no/invalid token), 403 (token not allowed here), 404, 413 (body or archive over a
limit), 429 (rate or queue full, with ``Retry-After``) or 503 (model not loaded yet). Routes are
documented at ``/docs`` (Swagger UI) and ``/openapi.json``. Every route except ``/healthz`` needs a
bearer token — the docs too (FastAPI's own open ``/docs``, ``/redoc`` and ``/openapi.json`` are
switched off and re-declared behind the token check); ``/metrics`` is open only on loopback or with
``metrics_public``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from medmm.errors import MedmmConfigError, MedmmInputError
from medmm.serve.intake import INPUT_NAMES, LimitExceeded, check_input, sniff_kind, stream_to_file
from medmm.serve.service import Service
from medmm.serve.store import ARTEFACTS
from medmm.serve.tokens import Token
from medmm.serve.worker import INTERNAL_ERROR

log = logging.getLogger("medmm.serve")
_UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "application/zip": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "description": "a zip of one DICOM series, or a NIfTI file (.nii / .nii.gz), as the raw body"}}
# declares the bearer scheme in the OpenAPI spec (Swagger UI's "Authorize"); the check itself is `authenticate`
_BEARER = HTTPBearer(auto_error=False, description="a token from `medmm serve token add`")


class ApiError(Exception):
    """An HTTP error answered as ``{"error": message}`` (plus optional headers)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        self.status, self.message, self.headers = status, " ".join(message.split()), headers or {}


def create_app(service: Service) -> FastAPI:
    """The FastAPI application over ``service`` (which the app starts and stops with itself)."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, service.stop)

    app = FastAPI(title="medmm serve", version=_version(), lifespan=lifespan,
                  description="Chest-CT diagnosis service: DICOM series or NIfTI in, findings and reports out.",
                  docs_url=None, redoc_url=None, openapi_url=None)  # served below, behind the token
    _install_error_handlers(app)
    _install_metrics_middleware(app, service)
    cfg, metrics = service.config, service.metrics

    def authenticate(request: Request, scope: str | None) -> Token:
        """The caller's token (401 none/invalid/revoked, 403 lacks ``scope``, 429 over its rate)."""
        header = request.headers.get("authorization", "")
        presented = header[7:].strip() if header[:7].lower() == "bearer " else None
        token = service.tokens.verify(presented) if service.tokens is not None else None
        if token is None:
            metrics.rejected.labels(reason="auth").inc()
            raise ApiError(401, "missing or invalid bearer token" if presented or header else
                           "missing bearer token (Authorization: Bearer <token>)",
                           {"WWW-Authenticate": "Bearer"})
        if scope is not None and scope not in token.scopes:
            metrics.rejected.labels(reason="scope").inc()
            raise ApiError(403, f"token {token.name!r} is not allowed to use {scope!r} endpoints")
        wait = service.rate.check(token.name)
        if wait:
            metrics.rejected.labels(reason="rate").inc()
            raise ApiError(429, f"rate limit of {cfg.limits.rate_per_minute:g} requests/minute exceeded",
                           {"Retry-After": str(wait)})
        return token

    def require(scope: str | None):
        """A route dependency: any valid token (``scope`` None) or one allowed ``scope``."""
        def check(request: Request, _declared=Depends(_BEARER)) -> Token:
            return authenticate(request, scope)
        return check

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers (no token needed)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz(token: Token = Depends(require("jobs"))) -> JSONResponse:
        """Readiness: 200 once the model is loaded, else 503."""
        if service.ready:
            return JSONResponse({"ready": True, "model": service.predictor.model_id})
        reason = service.load_error or "model is loading"
        return JSONResponse({"ready": False, "error": reason}, status_code=503)

    @app.get("/metrics", tags=["health"])
    def metrics_endpoint(request: Request) -> Response:
        """Prometheus metrics (token with scope ``metrics`` unless on loopback or ``metrics_public``)."""
        if not (cfg.metrics_public or cfg.loopback()):
            authenticate(request, "metrics")
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(token: Token = Depends(require(None))) -> JSONResponse:
        """The OpenAPI spec (any valid token)."""
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(token: Token = Depends(require(None))) -> HTMLResponse:
        """Swagger UI with the spec embedded: a browser does not send the bearer token when the page
        fetches ``/openapi.json``, so the page carries the spec itself."""
        return get_swagger_ui_html(openapi_url="", title=f"{app.title} - docs",
                                   swagger_ui_parameters={"spec": app.openapi()})

    @app.post("/v1/jobs", status_code=202, tags=["jobs"], openapi_extra=_UPLOAD_BODY)
    async def submit_job(request: Request, indication: str | None = Query(None, max_length=500),
                         token: Token = Depends(require("jobs"))) -> JSONResponse:
        """Accept a scan for diagnosis; returns its id and status URL (202)."""
        _refuse_without_model(service)
        if service.queue_full():
            metrics.rejected.labels(reason="queue").inc()
            raise ApiError(429, f"queue is full ({cfg.limits.max_queue} jobs waiting); retry later",
                           {"Retry-After": str(_retry_after(service))})
        job = await _accept(request, service, token, indication, cfg.limits.max_body_bytes)
        service.pool.submit(job.id)
        return JSONResponse({"job_id": job.id, "status_url": f"/v1/jobs/{job.id}"}, status_code=202)

    @app.post("/v1/predict", tags=["jobs"], openapi_extra=_UPLOAD_BODY)
    async def predict(request: Request, indication: str | None = Query(None, max_length=500),
                      token: Token = Depends(require("predict"))) -> Response:
        """Diagnose synchronously (small inputs); returns ``result.json``."""
        _refuse_without_model(service)
        if service.queue_full():
            metrics.rejected.labels(reason="queue").inc()
            raise ApiError(429, "queue is full; retry later", {"Retry-After": str(_retry_after(service))})
        job = await _accept(request, service, token, indication, cfg.limits.max_predict_bytes)
        future = service.pool.submit(job.id)
        try:
            done = await asyncio.wait_for(asyncio.wrap_future(future), cfg.limits.predict_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, f"not finished after {cfg.limits.predict_timeout_s:g} s; "
                           f"poll /v1/jobs/{job.id}") from None
        if done.status != "done":
            raise ApiError(500 if done.error == INTERNAL_ERROR else 400, done.error or "diagnosis failed")
        return FileResponse(service.store.out_dir(job.id) / "result.json", media_type="application/json")

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def job_status(job_id: str, token: Token = Depends(require("jobs"))) -> dict[str, Any]:
        """``{"status": "queued|running|done|failed", "error": one line or null, ...}``."""
        job = _own_job(service, job_id, token)
        out = service.store.out_dir(job.id)
        artefacts = [name for name in ARTEFACTS if job.status == "done" and (out / name).is_file()]
        return {"job_id": job.id, "status": job.status, "error": job.error,
                "artefacts": {name: f"/v1/jobs/{job.id}/{name}" for name in artefacts}}

    @app.get("/v1/jobs/{job_id}/{artefact}", tags=["jobs"])
    def job_artefact(job_id: str, artefact: str, token: Token = Depends(require("jobs"))) -> FileResponse:
        """``result.json``, ``report.html``, ``report_sr.dcm`` (DICOM input) or ``fhir.json``."""
        job = _own_job(service, job_id, token)
        if artefact not in ARTEFACTS:
            raise ApiError(404, f"unknown artefact {artefact[:40]!r}; one of {', '.join(ARTEFACTS)}")
        path = service.store.out_dir(job.id) / artefact
        if job.status != "done" or not path.is_file():
            raise ApiError(404, f"{artefact} not available (job is {job.status})")
        return FileResponse(path, media_type=ARTEFACTS[artefact])

    return app


async def _accept(request: Request, service: Service, token: Token, indication: str | None, max_bytes: int):
    """Stream the body into a new job's spool folder, check it, and commit the job row."""
    import shutil

    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        service.metrics.rejected.labels(reason="body_size").inc()
        raise ApiError(413, f"request body of {declared} bytes is over the {max_bytes}-byte limit")
    store, limits = service.store, service.config.limits
    job_id = store.new_id()
    folder = store.job_dir(job_id)
    part = folder / "upload.part"
    try:
        _, sha = await stream_to_file(request.stream(), part, max_bytes)
        kind = sniff_kind(part)
        await asyncio.get_running_loop().run_in_executor(
            None, check_input, part, kind, limits.max_archive_members, limits.max_archive_bytes)
        name = INPUT_NAMES[kind]
        part.rename(folder / name)
    except LimitExceeded as err:
        shutil.rmtree(folder, ignore_errors=True)
        service.metrics.rejected.labels(reason="body_size").inc()
        service.audit.record("upload", token=token.name, outcome="rejected", error=err.reason)
        raise ApiError(413, err.reason) from None
    except MedmmInputError as err:
        shutil.rmtree(folder, ignore_errors=True)
        service.metrics.errors.labels(type="MedmmInputError").inc()
        service.audit.record("upload", token=token.name, outcome="rejected", error=err.reason)
        raise ApiError(400, err.reason) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    keep_phi = bool(token.allow_phi)
    job = store.add(job_id, "http", kind, name, indication=indication, token=token.name, keep_phi=keep_phi,
                    input_sha256=sha)
    service.audit.record("accepted", token=token.name, job_id=job_id, input_sha256=sha, outcome="queued",
                         source="http")
    return job


def _refuse_without_model(service: Service) -> None:
    """503 when the model failed to load: accepting work that can never run would only hide it."""
    if service.load_error:
        raise ApiError(503, f"model not loaded: {service.load_error}")


def _own_job(service: Service, job_id: str, token: Token):
    """The job if it exists and belongs to ``token`` (someone else's job is a 404, not a 403)."""
    job = service.store.get(job_id) if job_id.isalnum() and len(job_id) <= 64 else None
    if job is None or job.token != token.name:
        raise ApiError(404, "no such job")
    return job


def _retry_after(service: Service) -> int:
    """Seconds a client should wait: the queue drained at the recent mean job time (≥ 1)."""
    hist = service.metrics.stage_seconds.labels(stage="model")
    samples = {s.name: s.value for m in hist.collect() for s in m.samples}
    count, total = samples.get("medmm_job_stage_seconds_count", 0), samples.get("medmm_job_stage_seconds_sum", 0)
    per_job = total / count if count else 5.0
    return max(1, int(per_job * service.config.limits.max_queue / service.config.limits.max_concurrent) + 1)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = "not found" if err.status_code == 404 else str(err.detail)
        return JSONResponse({"error": message}, status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(MedmmInputError)
    async def input_error(request: Request, err: MedmmInputError) -> JSONResponse:
        return JSONResponse({"error": err.reason}, status_code=400)

    @app.exception_handler(MedmmConfigError)
    async def config_error(request: Request, err: MedmmConfigError) -> JSONResponse:
        log.error("configuration error: %s", err)  # e.g. the tokens file was broken while running
        return JSONResponse({"error": "server configuration error (see the server log)"}, status_code=500)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        # a bug: Starlette still logs the traceback; the client gets the same JSON shape as any error
        return JSONResponse({"error": INTERNAL_ERROR}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg')}"}, status_code=400)


def _install_metrics_middleware(app: FastAPI, service: Service) -> None:
    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            service.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            service.metrics.request_seconds.labels(endpoint=endpoint).observe(time.perf_counter() - start)


def _version() -> str:
    from medmm import __version__

    return __version__


def app_from_config(config_path: str | Path | None = None, **overrides: Any) -> FastAPI:
    """An app for ``uvicorn --factory`` style use: ``serve.yaml`` + overrides."""
    from medmm.serve.config import load_serve_config

    return create_app(Service(load_serve_config(config_path, overrides)))
