"""Configuration: defaults < TOML file < IGGY_* environment < flags, Iggy's key names, and the
root user's password generated and shown once when none is configured."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from apache_iggy import IggyClient

from conftest import free_port
from iggy_fast.config import NEVER, load_config, parse_duration_us, parse_size


def test_sizes_and_durations():
    assert parse_size("1 GiB") == 1 << 30 and parse_size("100MB") == 100_000_000
    assert parse_size(4096) == 4096 and parse_size("unlimited") == NEVER
    assert parse_duration_us("7 days") == 7 * 86_400_000_000
    assert parse_duration_us("1m 30s") == 90_000_000 and parse_duration_us("never") == NEVER
    for bad in ("12 parsecs", "", "abc"):
        with pytest.raises(ValueError):
            parse_size(bad)
        with pytest.raises(ValueError):
            parse_duration_us(bad)


def test_layers_override_in_order(tmp_path):
    toml = tmp_path / "server.toml"
    toml.write_text('[tcp]\naddress = "127.0.0.1:9999"\n[system.segment]\nsize = "64 MiB"\n'
                    '[tcp.tls]\nenabled = false\n')
    cfg = load_config(str(toml), environ={})
    assert cfg["tcp"]["address"] == "127.0.0.1:9999" and cfg["system"]["segment"]["size"] == "64 MiB"
    env = {"IGGY_TCP_ADDRESS": "127.0.0.1:7777", "IGGY_TCP_TLS_ENABLED": "true",
           "IGGY_SYSTEM_PATH": "/tmp/x", "IGGY_HTTP_ENABLED": "true",
           "IGGY_QUIC_ADDRESS": "127.0.0.1:1", "IGGY_WEBSOCKET_ENABLED": "true",
           "IGGY_ROOT_USERNAME": "admin", "IGGY_ROOT_PASSWORD": "pw-from-env",
           "IGGY_SYSTEM_SEGMENT_SIZE": "8 MiB", "IGGY_SOMETHING_UNKNOWN": "ignored"}
    cfg = load_config(str(toml), environ=env)
    assert cfg["tcp"]["address"] == "127.0.0.1:7777" and cfg["tcp"]["tls"]["enabled"] is True
    assert cfg["system"]["path"] == "/tmp/x" and cfg["http"]["enabled"] is True
    assert cfg["quic"]["address"] == "127.0.0.1:1" and cfg["websocket"]["enabled"] is True
    assert cfg["root"] == {"username": "admin", "password": "pw-from-env"}
    assert cfg["system"]["segment"]["size"] == "8 MiB"
    cfg = load_config(str(toml), environ=env, overrides={"system": {"path": "/flag"}})
    assert cfg["system"]["path"] == "/flag"
    bad = tmp_path / "bad.toml"
    bad.write_text("[tcp]\nadress = 'typo'\n")
    with pytest.raises(ValueError, match="unknown config key tcp.adress"):
        load_config(str(bad), environ={})


async def test_generated_root_password_is_shown_once(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "iggy_fast.cli", "server", "--data-dir", str(tmp_path / "d"),
           "--tcp-address", f"127.0.0.1:{port}"]
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("IGGY_")}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if "iggy-fast started" in line:
            break
    log = "".join(lines)
    password = re.search(r"generated password: (\S+)", log).group(1)
    assert f"TCP listening on 127.0.0.1:{port}" in log
    c = IggyClient(f"127.0.0.1:{port}")
    await c.connect()
    with pytest.raises(RuntimeError):
        await c.login_user("iggy", "iggy")
    await c.login_user("iggy", password)
    proc.send_signal(__import__("signal").SIGINT)
    assert proc.wait(20) == 0
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    second = ""
    while "iggy-fast started" not in second:
        second += proc.stderr.readline()
    assert "generated password" not in second     # shown once, on first start only
    proc.terminate()
    assert proc.wait(20) == 0
