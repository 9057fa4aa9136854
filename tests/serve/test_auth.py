"""Every route of the app needs a token except /healthz — checked by walking ``app.routes``, so an
endpoint added later is covered without editing this file. Fast: no model is loaded (the app's
lifespan is not run), and /metrics is audited with the server bound off loopback, where it needs a
token too."""

from __future__ import annotations

import re

import pytest
from starlette.routing import Route

OPEN = {"/healthz"}


def _app(tmp_path, host="0.0.0.0"):
    from fastapi.testclient import TestClient

    from medmm.serve.app import create_app
    from medmm.serve.config import load_serve_config
    from medmm.serve.service import Service
    from medmm.serve.tokens import TokenStore

    store = TokenStore(tmp_path / "tokens.json")
    tokens = {"all": store.add("all"), "gone": store.add("gone"), "jobs_only": store.add("jobs_only", ["jobs"])}
    cfg = load_serve_config(None, {"state_dir": tmp_path / "state", "tokens_file": tmp_path / "tokens.json",
                                   "model": tmp_path / "no_run", "host": host, "limits.rate_burst": 10_000})
    return TestClient(create_app(Service(cfg))), tokens, store


def _requests(app):
    """(method, concrete path, template) for every HTTP route; any other kind of route fails the audit."""
    out = []
    for route in app.routes:
        assert isinstance(route, Route), f"route {route!r} is not an HTTP route: audit its auth by hand"
        path = re.sub(r"\{[^}]+\}", "0123abcd", route.path)
        out += [(method, path, route.path) for method in sorted(route.methods or ())]
    return out


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def test_every_route_but_healthz_needs_a_token(tmp_path):
    client, tokens, store = _app(tmp_path)
    routes = _requests(client.app)
    assert {"/docs", "/openapi.json", "/metrics", "/readyz", "/v1/jobs", "/v1/predict", "/v1/jobs/{job_id}",
            "/v1/jobs/{job_id}/{artefact}", "/healthz"} <= {template for _, _, template in routes}
    for method, path, template in routes:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic YTpi"}):
            r = client.request(method, path, headers=headers)
            if template in OPEN:
                assert r.status_code == 200, (method, path)
            else:
                assert r.status_code == 401, (method, path, headers, r.status_code)
                assert r.headers["WWW-Authenticate"] == "Bearer"
                if method != "HEAD":
                    assert set(r.json()) == {"error"}, (method, path)
        # a valid token gets past the check (whatever the route then answers) ...
        assert client.request(method, path, headers=_auth(tokens["gone"])).status_code != 401, (method, path)
    store.revoke("gone")
    for method, path, template in routes:  # ... and the same token, revoked, does not
        r = client.request(method, path, headers=_auth(tokens["gone"]))
        assert r.status_code == (200 if template in OPEN else 401), (method, path)


def test_docs_and_spec_need_a_token_and_document_the_bearer_scheme(tmp_path):
    client, tokens, store = _app(tmp_path, host="127.0.0.1")
    for path in ("/docs", "/openapi.json"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=_auth("wrong")).status_code == 401
        assert client.get(path, headers=_auth(tokens["jobs_only"])).status_code == 200  # any valid token
    spec = client.get("/openapi.json", headers=_auth(tokens["all"])).json()
    assert {"/v1/jobs", "/v1/predict", "/v1/jobs/{job_id}", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    assert "/docs" not in spec["paths"] and "/openapi.json" not in spec["paths"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert spec["paths"]["/v1/jobs"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    page = client.get("/docs", headers=_auth(tokens["all"]))
    assert page.headers["content-type"].startswith("text/html")
    assert '"spec"' in page.text and "/v1/predict" in page.text  # the page carries the spec itself
    store.revoke("jobs_only")
    for path in ("/docs", "/openapi.json"):
        assert client.get(path, headers=_auth(tokens["jobs_only"])).status_code == 401
    # FastAPI's other default doc routes are not served at all
    for path in ("/redoc", "/docs/oauth2-redirect"):
        assert client.get(path, headers=_auth(tokens["all"])).status_code == 404
    assert client.get("/metrics").status_code == 200  # loopback: Prometheus scrapes without a token


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3"])
def test_metrics_off_loopback_refuses_missing_wrong_and_revoked_tokens(tmp_path, host):
    client, tokens, store = _app(tmp_path, host=host)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=_auth("wrong")).status_code == 401
    assert client.get("/metrics", headers=_auth(tokens["jobs_only"])).status_code == 403
    assert client.get("/metrics", headers=_auth(tokens["gone"])).status_code == 200
    store.revoke("gone")
    assert client.get("/metrics", headers=_auth(tokens["gone"])).status_code == 401


def test_revocation_seen_even_within_one_file_timestamp_tick(tmp_path):
    """A revoke written within the same file-system timestamp tick as the version the server cached
    (coarse clocks tick every few ms) must still be seen: the tick is simulated by restoring the mtime."""
    import os

    from medmm.serve.tokens import TokenStore

    path = tmp_path / "t.json"
    writer, server_view = TokenStore(path), TokenStore(path)
    keep, token = writer.add("keep"), writer.add("gone")
    assert server_view.verify(token).name == "gone"
    cached_mtime = path.stat().st_mtime_ns
    writer.revoke("gone")
    os.utime(path, ns=(path.stat().st_atime_ns, cached_mtime))
    assert server_view.verify(token) is None, "revoked token still accepted"
    assert server_view.verify(keep).name == "keep"


def test_a_bug_in_a_route_is_a_json_500(tmp_path, monkeypatch):
    """Unexpected exceptions answer the same ``{"error": ...}`` shape (no HTML, no exception text)."""
    from fastapi.testclient import TestClient

    client, tokens, _ = _app(tmp_path)

    def broken():
        raise RuntimeError("SENTINEL-EXCEPTION-DETAIL")

    monkeypatch.setattr("medmm.serve.store.JobStore.new_id", staticmethod(broken))
    r = TestClient(client.app, raise_server_exceptions=False).post("/v1/jobs", content=b"x",
                                                                   headers=_auth(tokens["all"]))
    assert r.status_code == 500 and r.json() == {"error": "internal error (see the server log)"}
    assert "SENTINEL" not in r.text
