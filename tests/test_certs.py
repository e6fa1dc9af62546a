"""`iggy-fast certs generate`: a CA and a server certificate it signs, for the given names and
addresses, keys owner-only; a second run keeps the CA; a directory that cannot be written is
one line and exit code 2. (That the official SDK and aiohttp accept the server with them:
test_tls_transports.py.)"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iggy_fast.cli", "certs", "generate", *args],
                          capture_output=True, text=True, timeout=60)


def load(path) -> x509.Certificate:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def test_generate_writes_a_ca_and_a_server_certificate_it_signs(tmp_path):
    out = tmp_path / "certs"
    done = run("--out", str(out), "--host", "localhost", "--host", "127.0.0.1",
               "--host", "iggy.example", "--host", "::1")
    assert done.returncode == 0, done.stderr
    assert "tls_ca_file=" in done.stdout and "IGGY_TCP_TLS_CERT_FILE" in done.stdout
    modes = {name: os.stat(out / name).st_mode & 0o777 for name in os.listdir(out)}
    assert modes == {"ca_cert.pem": 0o644, "ca_key.pem": 0o600,
                     "server_cert.pem": 0o644, "server_key.pem": 0o600}
    ca, server = load(out / "ca_cert.pem"), load(out / "server_cert.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "iggy.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                       ipaddress.ip_address("::1")]
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    days = (server.not_valid_after_utc - server.not_valid_before_utc).days
    assert 390 <= days <= 398


def test_a_second_run_keeps_the_ca_and_renews_the_server_certificate(tmp_path):
    assert run("--out", str(tmp_path), "--days", "30").returncode == 0
    ca_before = (tmp_path / "ca_cert.pem").read_bytes()
    server_before = (tmp_path / "server_cert.pem").read_bytes()
    again = run("--out", str(tmp_path), "--host", "other.local")
    assert again.returncode == 0 and "kept the CA" in again.stdout
    assert (tmp_path / "ca_cert.pem").read_bytes() == ca_before
    assert (tmp_path / "server_cert.pem").read_bytes() != server_before
    server = load(tmp_path / "server_cert.pem")
    server.verify_directly_issued_by(load(tmp_path / "ca_cert.pem"))
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["other.local"]


def test_an_unusable_directory_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = run("--out", str(blocker / "certs"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "cannot generate certificates" in done.stderr
    assert "Traceback" not in done.stderr
