"""TCP over TLS: the official SDK validates our self-signed certificate against its CA file."""

from __future__ import annotations

import os

import pytest
from apache_iggy import IggyClient, TcpConfig

from conftest import ServerProcess


async def test_sdk_over_tls_with_ca_validation(tmp_path):
    srv = ServerProcess(tmp_path / "tls", env={"IGGY_TCP_TLS_ENABLED": "true"})
    srv.start()
    try:
        ca = os.path.join(srv.data_dir, "certs", "iggy_cert.pem")
        c = IggyClient(TcpConfig(server_address=srv.address, tls_enabled=True,
                                 tls_domain="localhost", tls_ca_file=ca,
                                 tls_validate_certificate=True))
        await c.connect()
        await c.login_user("iggy", "iggy")
        await c.create_stream("secure")
        assert (await c.get_stream("secure")).name == "secure"
        # A plaintext client gets nowhere (and does not disturb the server).
        plain = IggyClient(srv.address)
        with pytest.raises(Exception):
            import asyncio
            await asyncio.wait_for(plain.connect(), 2)
            await asyncio.wait_for(plain.login_user("iggy", "iggy"), 2)
        assert await c.get_stream("secure") is not None
    finally:
        assert srv.stop() == 0
