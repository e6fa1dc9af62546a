"""TLS for the TCP listener: where the certificate comes from, and an accept loop that logs
every failed handshake.

The certificate: configured `cert_file` (and `key_file`; empty means the key is in the
certificate file) are loaded, and a missing, unreadable or invalid one stops the server with one
line naming it. Only when neither is configured and `self_signed = true` (the default, as in
Iggy) is a key and certificate for localhost/127.0.0.1 generated with `cryptography`, once, and
kept in `<data>/certs/` (owner-only, 0600), so restarts present the same certificate. Unlike
Iggy, a configured file that does not exist is never replaced by a generated certificate: a
mistyped path would otherwise serve a certificate nobody asked for.

Failed handshakes: the event loop's own TLS server drops them silently (an SSL error is an
OSError, which asyncio and uvloop report only in debug mode), so the listener accepts plain
sockets itself and runs each handshake with `connect_accepted_socket`, the loop's public way to
wrap an accepted socket: a failure comes back to us, where the peer's address is known, and is
logged as one WARNING line (a peer that closes before finishing its handshake, such as a port
probe or a load balancer's health check, only at DEBUG). The handshake runs in the loop's own
SSL protocol as before; only the accept is ours (a task per connection, not per message).
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import ipaddress
import logging
import os
import socket
import ssl

from iggy_fast.config import ConfigError
from iggy_fast.server.core import StartupError
from iggy_fast.server.transports.sockets import os_reason

log = logging.getLogger("iggy_fast.tls")

OWNER_ONLY = 0o600
HANDSHAKE_TIMEOUT = 60.0      # at most; a shorter login deadline bounds the handshake too
# accept() errors that mean the process or system is out of something: wait before retrying,
# as asyncio's own server does, instead of spinning.
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def configured_context(tls_cfg: dict, section: str = "tcp.tls") -> ssl.SSLContext | None:
    """The context for the configured certificate files of `section` (its name in messages);
    None when none are configured and a self-signed certificate is asked for (a section
    without `self_signed` never gets one). ConfigError (one line) names a file that cannot be
    used, or says that nothing provides a certificate."""
    cert, key = tls_cfg["cert_file"], tls_cfg["key_file"]
    if not cert and not key:
        if "self_signed" not in tls_cfg:
            raise ConfigError(f"{section} is enabled and no cert_file is configured")
        if not tls_cfg["self_signed"]:
            raise ConfigError(f"{section} is enabled with self_signed = false and no "
                              "cert_file: configure cert_file and key_file, or set "
                              "self_signed = true")
        return None
    if not cert:
        raise ConfigError(f"{section}.key_file {key} is configured without a cert_file")
    for name, path in (("cert_file", cert), ("key_file", key)):
        if not path:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise ConfigError(f"{section}.{name} {path}: {e.strerror}") from None
    try:
        return _context(cert, key or None)
    except ssl.SSLError as e:
        raise ConfigError(f"{section}: {cert}{' / ' + key if key else ''} is not a usable PEM "
                          f"certificate and key: {e.reason or e}") from None


def self_signed_context(data_dir: str) -> ssl.SSLContext:
    return _context(*self_signed(data_dir))


def self_signed_context_or_stop(data_dir: str) -> ssl.SSLContext:
    """The self-signed certificate's context; StartupError when it cannot be written."""
    try:
        return self_signed_context(data_dir)
    except OSError as e:
        raise StartupError(f"cannot write a self-signed certificate in "
                           f"{os.path.join(data_dir, 'certs')}: {os_reason(e)}") from None


def _context(cert: str, key: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def _write_owner_only(path: str, data: bytes) -> None:
    # The mode is given at creation and set again for a file that already existed: 0600
    # whatever the umask.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, OWNER_ONLY)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, OWNER_ONLY)
        f.write(data)


def self_signed(directory: str) -> tuple[str, str]:
    """(certificate, key) paths in `<directory>/certs/`, generated on first use."""
    certs = os.path.join(directory, "certs")
    cert_path = os.path.join(certs, "iggy_cert.pem")
    key_path = os.path.join(certs, "iggy_key.pem")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        for path in (cert_path, key_path):
            if os.stat(path).st_mode & 0o777 != OWNER_ONLY:   # written by an older version
                os.chmod(path, OWNER_ONLY)
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
    os.makedirs(certs, mode=0o700, exist_ok=True)
    _write_owner_only(key_path, key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    _write_owner_only(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")       # WRONG_VERSION_NUMBER
    return exc.strerror or str(exc) or type(exc).__name__


class TlsListener:
    """Accepts on a listening socket and runs each connection's TLS handshake, logging a
    failure with the peer's address. close() and wait_closed() as an asyncio Server has them."""

    def __init__(self, sock: socket.socket, ssl_context: ssl.SSLContext, protocol_factory,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT):
        self.sockets = [sock]
        self._ctx = ssl_context
        self._handshake_timeout = min(handshake_timeout, HANDSHAKE_TIMEOUT)
        self._factory = protocol_factory
        self._handshakes: set[asyncio.Task] = set()
        sock.setblocking(False)
        self._accepting = asyncio.ensure_future(self._accept(sock))

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(sock)
            except OSError as e:
                if e.errno in _OUT_OF_RESOURCES:
                    log.error("TLS listener cannot accept: %s; retrying in 1 s", e.strerror)
                    await asyncio.sleep(1)
                continue            # the peer gave up before we took it (ECONNABORTED)
            task = loop.create_task(self._handshake(loop, conn, peer))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, loop, conn: socket.socket, peer) -> None:
        try:
            await loop.connect_accepted_socket(self._factory, conn, ssl=self._ctx,
                                               ssl_handshake_timeout=self._handshake_timeout)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError) as e:
            # The peer went away first: a port probe or a health check, not worth a warning.
            conn.close()
            log.debug("TLS connection from %s:%d closed before its handshake: %s",
                      peer[0], peer[1], _reason(e))
        except OSError as e:        # the handshake failed (SSLError), or it timed out
            conn.close()
            log.warning("TLS handshake with %s:%d failed: %s", peer[0], peer[1], _reason(e))

    def close(self) -> None:
        self._accepting.cancel()
        for task in self._handshakes:
            task.cancel()
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        await asyncio.gather(self._accepting, *self._handshakes, return_exceptions=True)
