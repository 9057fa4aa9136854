"""``medmm serve --model RUN_DIR``: the HTTP API + DICOM node; ``medmm serve token add|revoke|list``.

Thin layer over :mod:`medmm.serve`: options map one to one onto ``serve.yaml`` keys (an option
given on the command line wins over the file).
"""

from __future__ import annotations

from pathlib import Path

import click

_PATH = click.Path(path_type=Path)


@click.group("serve", invoke_without_command=True)
@click.option("--model", "model", type=_PATH, default=None, help="Run directory from `medmm train`.")
@click.option("--config", "config", type=_PATH, default=None, help="serve.yaml (see docs/serve.md).")
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="HTTP port (default 8000).")
@click.option("--state-dir", type=_PATH, default=None, help="Job table, spool, results, audit log.")
@click.option("--tokens-file", type=_PATH, default=None, help="Bearer tokens (medmm serve token add).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None)
@click.option("--ssl-certfile", type=_PATH, default=None, help="TLS certificate (PEM).")
@click.option("--ssl-keyfile", type=_PATH, default=None, help="TLS private key (PEM).")
@click.option("--dicom-port", type=int, default=None, help="Start the DICOM Storage SCP on this port.")
@click.option("--ae-title", default=None, help="Our AE title (default MEDMM).")
@click.option("--allow-ae", multiple=True, help="Calling AE title allowed to send (repeatable).")
@click.option("--send-to", default=None, help="AE@host:port that receives the DICOM SR.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
# --ray: the same app on autoscaled Ray Serve replicas (medmm/serve/ray_serve.py, docs/scale.md)
@click.option("--ray", "use_ray", is_flag=True, help="Serve on Ray Serve replicas (medmm[ray]), autoscaled.")
@click.option("--min-replicas", type=click.IntRange(min=1), default=1, show_default=True, help="With --ray.")
@click.option("--max-replicas", type=click.IntRange(min=1), default=1, show_default=True, help="With --ray.")
@click.option("--gpus-per-replica", type=click.FloatRange(min=0), default=0.0, show_default=True, help="With --ray.")
@click.option("--address", default=None, help="With --ray: 'auto' joins a running cluster (default: a local one).")
@click.pass_context
def serve(ctx: click.Context, model, config, host, port, state_dir, tokens_file, device, ssl_certfile, ssl_keyfile,
          dicom_port, ae_title, allow_ae, send_to, log_level, use_ray, min_replicas, max_replicas, gpus_per_replica,
          address) -> None:
    """Serve a trained model over HTTP (and DICOM with --dicom-port) until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    from medmm.errors import MedmmConfigError, MedmmInputError
    from medmm.serve.config import load_serve_config

    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "pynetdicom", "prometheus_client")):
        raise MedmmConfigError(None, "medmm serve needs the serve extra: pip install 'medmm[serve]'")
    cfg = load_serve_config(config, {
        "model": model, "host": host, "port": port, "state_dir": state_dir, "tokens_file": tokens_file,
        "device": device, "ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile, "dicom.port": dicom_port,
        "dicom.ae_title": ae_title, "dicom.allow_ae": allow_ae, "dicom.send_to": send_to})
    if cfg.model is None:
        raise MedmmConfigError("--model", "name the run directory to serve (--model RUN_DIR or model: in serve.yaml)")
    if not (Path(cfg.model) / "medmm.json").is_file():
        raise MedmmInputError(cfg.model, "not a medmm run directory (no medmm.json); train one with `medmm train`")
    for key in ("ssl_certfile", "ssl_keyfile"):
        value = getattr(cfg, key)
        if value is not None and not Path(value).is_file():
            raise MedmmInputError(value, f"--{key.replace('_', '-')} does not exist")
    if (cfg.ssl_certfile is None) != (cfg.ssl_keyfile is None):
        raise MedmmConfigError("--ssl-certfile/--ssl-keyfile", "give both or neither")
    if use_ray:
        from medmm.serve.ray_serve import ReplicaSettings, run_ray_server

        return run_ray_server(cfg, ReplicaSettings(address, min_replicas, max_replicas,
                                                   gpus_per_replica=gpus_per_replica))
    from medmm.serve.server import run_server

    run_server(cfg, log_level=log_level)


@serve.group("token")
def token() -> None:
    """Manage bearer tokens (the file keeps only their SHA-256)."""


@token.command("add")
@click.argument("name")
@click.option("--tokens-file", type=_PATH, required=True)
@click.option("--scope", "scopes", multiple=True, type=click.Choice(["jobs", "predict", "metrics"]),
              help="Endpoint groups allowed (repeatable; default all).")
@click.option("--allow-phi", is_flag=True, help="Outputs of this token's jobs keep patient identity (SR).")
def token_add(name: str, tokens_file: Path, scopes: tuple[str, ...], allow_phi: bool) -> None:
    """Create token NAME; prints it once (the last line of output is the token alone)."""
    from medmm.serve.tokens import SCOPES, TokenStore

    value = TokenStore(tokens_file).add(name, scopes=scopes or SCOPES, allow_phi=allow_phi)
    click.echo(f"token {name!r} added to {tokens_file}; it is shown only now:", err=False)
    click.echo(value)


@token.command("revoke")
@click.argument("name")
@click.option("--tokens-file", type=_PATH, required=True)
def token_revoke(name: str, tokens_file: Path) -> None:
    """Revoke token NAME (a running server stops accepting it at once)."""
    from medmm.serve.tokens import TokenStore

    TokenStore(tokens_file).revoke(name)
    click.echo(f"token {name!r} revoked")


@token.command("list")
@click.option("--tokens-file", type=_PATH, required=True)
def token_list(tokens_file: Path) -> None:
    """Token names, scopes and creation times (never the tokens)."""
    from medmm.serve.tokens import TokenStore

    for t in TokenStore(tokens_file).load():
        click.echo(f"{t.name}\t{','.join(t.scopes)}\tallow_phi={t.allow_phi}\t{t.created}")


@serve.command("reference")
@click.option("--model", "model", type=_PATH, required=True, help="Run directory from `medmm train`.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None)
def reference(model: Path, device: str | None) -> None:
    """Compute the drift reference profile on the run's validation split into RUN/drift_reference.json."""
    import json

    from medmm.inference import load_model
    from medmm.io.writers import atomic_write_bytes
    from medmm.serve.drift import REFERENCE_FILE, compute_reference, validation_images

    predictor = load_model(model, device=device)
    profile = compute_reference(predictor, validation_images(Path(model)))
    path = atomic_write_bytes(Path(model) / REFERENCE_FILE, (json.dumps(profile) + "\n").encode("utf-8"))
    click.echo(f"drift reference from {profile['n_scans']} validation scans: {path}")
