"""TLS for the server's listeners: certificates from files, or a self-signed one made once.

With `self_signed = true` and no certificate files configured, a key and certificate for
localhost/127.0.0.1 are generated with `cryptography` and kept in `<data>/certs/`, so restarts
present the same certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl


def self_signed(directory: str) -> tuple[str, str]:
    cert_path = os.path.join(directory, "certs", "iggy_cert.pem")
    key_path = os.path.join(directory, "certs", "iggy_key.pem")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    os.makedirs(os.path.dirname(cert_path), exist_ok=True)
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_context(tls_cfg: dict, data_dir: str) -> ssl.SSLContext:
    cert, key = tls_cfg.get("cert_file"), tls_cfg.get("key_file")
    if not (cert and key and os.path.exists(cert)):
        if not tls_cfg.get("self_signed", True):
            raise ValueError("TLS is enabled but cert_file/key_file are not readable")
        cert, key = self_signed(data_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx
