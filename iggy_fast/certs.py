"""A private certificate authority and a server certificate it signs, for TLS on any transport.

`iggy-fast certs generate --out DIR --host localhost --host 127.0.0.1` (cli/certs.py) writes:

    ca_cert.pem       the CA certificate: what clients trust (the SDK's `tls_ca_file`,
                      aiohttp's cafile, a browser's or the system's trust store)
    ca_key.pem        the CA's private key (0600): keep it apart; it signs further server
                      certificates
    server_cert.pem   the server certificate, signed by the CA, valid for every --host
                      (names as DNS subjectAltNames, addresses as IP subjectAltNames)
    server_key.pem    its private key (0600): `cert_file` / `key_file` of a transport's TLS

A directory that already holds ca_cert.pem and ca_key.pem keeps its CA: only the server
certificate is made anew, so clients that trust the CA need nothing new when it is renewed.

Why a CA rather than one self-signed certificate: clients trust the CA once, and server
certificates can then be renewed, or made for further hosts, without touching them; the key
that signs stays apart from the one every server holds. The CA is marked a CA (basic
constraints, keyCertSign) and the server certificate is an end entity for serverAuth with the
subjectAltNames verifiers match against (rustls, which the official SDK uses, and browsers
read no common name). Its validity defaults to 397 days, within what browsers accept of a
server certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca_cert.pem", "ca_key.pem"
SERVER_CERT, SERVER_KEY = "server_cert.pem", "server_key.pem"
CA_DAYS = 3650
SERVER_DAYS = 397
OWNER_ONLY = 0o600


@dataclass
class Generated:
    ca_cert: str
    ca_key: str
    server_cert: str
    server_key: str
    ca_reused: bool           # the directory's CA signed the new server certificate


def _subject_alt_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _write(path: str, data: bytes, mode: int) -> None:
    # The mode is given at creation and set again for a file that already existed.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, mode)
        f.write(data)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _make_ca(now: datetime.datetime):
    key = ec.generate_private_key(ec.SECP256R1())
    # A name of its own: a verifier holding another generated CA then says "unknown CA"
    # rather than trying that CA's key on this one's signature ("decrypt error").
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                         f"iggy-fast local CA {os.urandom(4).hex()}")])
    public = key.public_key()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _load_ca(cert_path: str, key_path: str):
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    return cert, key


def generate(out_dir: str, hosts: list[str], days: int = SERVER_DAYS) -> Generated:
    """Write the CA (unless `out_dir` has one) and a server certificate for `hosts` signed by
    it; see the module docstring. ValueError for no hosts; OSError, ValueError from files."""
    if not hosts:
        raise ValueError("at least one host name or address is needed")
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    paths = Generated(*(os.path.join(out_dir, n) for n in (CA_CERT, CA_KEY, SERVER_CERT,
                                                           SERVER_KEY)), ca_reused=False)
    now = datetime.datetime.now(datetime.timezone.utc)
    if os.path.exists(paths.ca_cert) and os.path.exists(paths.ca_key):
        ca_cert, ca_key = _load_ca(paths.ca_cert, paths.ca_key)
        paths.ca_reused = True
    else:
        ca_cert, ca_key = _make_ca(now)
        _write(paths.ca_key, _key_pem(ca_key), OWNER_ONLY)
        _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)

    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    first = hosts[0]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first)]))
            .issuer_name(ca_cert.subject)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(min(now + datetime.timedelta(days=days),
                                 ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(_subject_alt_names(hosts)),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(paths.server_key, _key_pem(key), OWNER_ONLY)
    _write(paths.server_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths
