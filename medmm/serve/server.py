"""Run the service under uvicorn (HTTP or HTTPS), with logs that carry no PHI.

Logs are one line per event: medmm's own messages (job ids, one-line errors, counts) and
uvicorn's access log (method, route path with a random job id, status). Neither ever holds a
patient name, ID, date or UID: those live only inside DICOM files in the spool.
"""

from __future__ import annotations

import logging

from medmm.serve.config import ServeConfig

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class DropQueryString(logging.Filter):
    """Access-log lines without the query string: ``?indication=`` is free text a clinician may
    fill with identifying details."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            args = list(record.args)
            args[2] = args[2].split("?", 1)[0]
            record.args = tuple(args)
        return True


def configure_logging(level: str = "INFO") -> None:
    """medmm.serve and uvicorn log lines on stderr; pynetdicom kept at WARNING (its INFO/DEBUG
    lines dump association details and, at DEBUG, dataset contents)."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").addFilter(DropQueryString())


def run_server(config: ServeConfig, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM finish running jobs; queued ones stay durable)."""
    import uvicorn

    from medmm.serve.app import create_app
    from medmm.serve.service import Service

    configure_logging(log_level.upper())
    app = create_app(Service(config))
    uv = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        ssl_certfile=str(config.ssl_certfile) if config.ssl_certfile else None,
        ssl_keyfile=str(config.ssl_keyfile) if config.ssl_keyfile else None,
        log_level=log_level,
        log_config=None,  # keep the format configured above
        timeout_graceful_shutdown=30,
    )
    uvicorn.Server(uv).run()
