"""HTTPS with --ssl-certfile/--ssl-keyfile, using a self-signed certificate made here."""

from __future__ import annotations

import datetime
import ipaddress

import pytest

from serving import start_server

pytestmark = pytest.mark.slow


def self_signed(folder):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_with_self_signed_certificate(trained_run, tmp_path, make_tokens):
    import ssl

    import httpx

    cert, key = self_signed(tmp_path)
    tokens = make_tokens(tmp_path / "tokens.json", alice=("jobs",))
    context = ssl.create_default_context(cafile=str(cert))
    srv = start_server(trained_run, tmp_path / "state", tmp_path / "tokens.json", tokens,
                       "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), scheme="https", verify=context)
    try:
        with httpx.Client(base_url=srv.url, verify=context, timeout=30) as client:
            assert client.get("/readyz", headers=srv.headers()).json()["ready"] is True
        with pytest.raises(httpx.ConnectError):  # an unverified client refuses the unknown certificate
            httpx.get(f"{srv.url}/healthz", timeout=10)
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on the TLS port
            httpx.get(srv.url.replace("https://", "http://") + "/healthz", timeout=10)
    finally:
        srv.stop()
