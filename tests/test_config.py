"""Configuration: defaults < TOML file < IGGY_* environment < flags, Iggy's whole key tree
accepted (implemented keys applied, the rest reported as not applied, others refused in one
line), transports not built yet announced, the environment on a real server, and the root
user's password generated and shown once when none is configured."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from apache_iggy import IggyClient

from conftest import ROOT, ServerProcess, free_port
from iggy_fast.testing import clean_env
from iggy_fast.config import (NEVER, ConfigError, load_config, parse_duration_us, parse_size,
                              read_config)

# A miniature of an Iggy server.toml: sections and keys shaped like Iggy's own (its current tree
# and the 0.8 release's), most of which iggy-fast accepts without implementing.
IGGY_STYLE_TOML = """
[http]
enabled = true
address = "127.0.0.1:3000"
max_request_size = "2 MB"

[http.cors]
enabled = true
allowed_methods = ["GET", "POST"]

[http.jwt]
access_token_expiry = "1 h"

[tcp]
enabled = true
address = "127.0.0.1:9999"
ipv6 = false

[tcp.socket]
override_defaults = false
nodelay = true

[quic]
enabled = false
initial_mtu = "1200 B"

[system]
path = "from-the-file"

[system.segment]
size = "64 MiB"
archive_expired = false

[system.sharding]
cpu_allocation = "numa:auto"

[cluster]
enabled = false
name = "mini-cluster"

[[cluster.nodes]]
name = "node-a"
ip = "127.0.0.1"
ports = { tcp = 8090, quic = 8080 }

[message_bus]
max_message_size = "64 MiB"
"""


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
    cfg, _, unknown = read_config(str(toml), environ=env)
    assert unknown == ["IGGY_SOMETHING_UNKNOWN"]
    assert cfg["tcp"]["address"] == "127.0.0.1:7777" and cfg["tcp"]["tls"]["enabled"] is True
    assert cfg["system"]["path"] == "/tmp/x" and cfg["http"]["enabled"] is True
    assert cfg["quic"]["address"] == "127.0.0.1:1" and cfg["websocket"]["enabled"] is True
    assert cfg["root"] == {"username": "admin", "password": "pw-from-env"}
    assert cfg["system"]["segment"]["size"] == "8 MiB"
    cfg = load_config(str(toml), environ=env, overrides={"system": {"path": "/flag"}})
    assert cfg["system"]["path"] == "/flag"


def test_an_iggy_server_toml_is_taken_as_it_is(tmp_path):
    toml = tmp_path / "server.toml"
    toml.write_text(IGGY_STYLE_TOML)
    cfg, not_applied, _ = read_config(str(toml), environ={})
    # What iggy-fast implements takes effect...
    assert cfg["tcp"]["address"] == "127.0.0.1:9999" and cfg["system"]["path"] == "from-the-file"
    assert cfg["system"]["segment"]["size"] == "64 MiB" and cfg["cluster"]["name"] == "mini-cluster"
    assert cfg["http"]["enabled"] is True and cfg["quic"]["enabled"] is False
    assert cfg["quic"]["initial_mtu"] == "1200 B"
    # ...and every other Iggy key is accepted and reported, not kept.
    assert cfg["http"]["cors"]["allowed_methods"] == ["GET", "POST"]
    assert cfg["http"]["jwt"]["access_token_expiry"] == "1 h"
    assert not_applied == sorted([
        "tcp.ipv6", "tcp.socket.override_defaults",
        "tcp.socket.nodelay", "system.segment.archive_expired",
        "system.sharding.cpu_allocation", "cluster.nodes",
        "message_bus.max_message_size"])
    assert "socket" not in cfg["tcp"]


@pytest.mark.parametrize("text, message", [
    ("[tcp]\nadress = 'typo'\n", "tcp.adress is not an Iggy configuration key"),
    ("[htttp]\nenabled = true\n", "htttp is not an Iggy configuration key"),
    ("[system.segment]\nsize = 'huge'\n", "system.segment.size: not a size: 'huge'"),
    ("[tcp]\nenabled = 'maybe'\n", "tcp.enabled: not a boolean: 'maybe'"),
    ("[tcp]\naddress = 'no-port'\n", "tcp.address: not a host:port address"),
    ("tcp = 1\n", "tcp is a section, not a value"),
    ("[tcp.address]\nx = 1\n", "tcp.address is a value, not a section"),
    ("[tcp\n", "not valid TOML"),
])
def test_what_iggy_does_not_have_is_refused_in_one_line(tmp_path, text, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(str(bad), environ={})
    assert message in str(e.value) and str(bad) in str(e.value) and "\n" not in str(e.value)


def test_environment_takes_iggy_names_and_applies_ours():
    env = {"IGGY_HTTP_MAX_REQUEST_SIZE": "4 MB", "IGGY_TCP_SOCKET_NODELAY": "true",
           "IGGY_CLUSTER_NODES_0_NAME": "node-a", "IGGY_PARTITION_PREPARE_QUEUE_DEPTH": "8",
           "IGGY_SYSTEM_PARTITION_ENFORCE_FSYNC": "true", "IGGY_TCP_SOCKET_MIGRATION": "false",
           "IGGY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER": "7",
           "IGGY_TCP_ENABLED": "",                      # empty: ignored, as Iggy does
           "IGGY_USERNAME": "a CLI's", "IGGY_FAST_DEBUG": "1", "IGGY_CONFIG_PATH": ""}
    cfg, not_applied, unknown = read_config(None, environ=env)
    assert cfg["system"]["partition"]["enforce_fsync"] is True
    assert cfg["personal_access_token"]["max_tokens_per_user"] == 7 and cfg["tcp"]["enabled"]
    assert not_applied == ["cluster.nodes.0.name",
                           "partition.prepare_queue_depth", "tcp.socket.nodelay",
                           "tcp.socket_migration"]
    assert unknown == ["IGGY_USERNAME"]     # reported and ignored; IGGY_FAST_* are ours
    for name, value, message in [("IGGY_TCP_ENABLED", "maybe", "not a boolean"),
                                 ("IGGY_HTTP_ENABLED", "sometimes", "not a boolean"),
                                 ("IGGY_SYSTEM_SEGMENT_SIZE", "big", "not a size"),
                                 ("IGGY_HEARTBEAT_INTERVAL", "soon", "not a duration"),
                                 ("IGGY_TCP_ADDRESS", "localhost", "not a host:port")]:
        with pytest.raises(ConfigError, match=f"^{name}={value}: .*{message}"):
            read_config(None, environ={name: value})


def test_nothing_to_listen_on_is_refused():
    off = {f"IGGY_{name}_ENABLED": "false" for name in ("TCP", "QUIC", "HTTP", "WEBSOCKET")}
    with pytest.raises(ConfigError, match="nothing to listen on"):
        read_config(None, environ=off)
    # Any one transport is enough.
    for name in ("TCP", "QUIC", "HTTP", "WEBSOCKET"):
        assert read_config(None, environ={**off, f"IGGY_{name}_ENABLED": "true"})


def run_server_cli(tmp_path, env: dict, *args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "iggy_fast.cli", "server", "--data-dir", str(tmp_path / "d"),
           "--tcp-address", f"127.0.0.1:{free_port()}", *args]
    return subprocess.run(cmd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)


@pytest.mark.parametrize("env, args, message", [
    ({"IGGY_TCP_ENABLED": "maybe"}, (), "IGGY_TCP_ENABLED=maybe: tcp.enabled: not a boolean"),
    ({f"IGGY_{name}_ENABLED": "false" for name in ("TCP", "QUIC", "HTTP", "WEBSOCKET")}, (),
     "nothing to listen on"),
    ({"IGGY_QUIC_ENABLED": "yes please"}, (), "IGGY_QUIC_ENABLED=yes please"),
    ({}, ("--config", "missing.toml"), "cannot read config file missing.toml"),
    ({}, ("--tcp-address", "nowhere"), "command line: tcp.address: not a host:port address"),
])
def test_a_bad_configuration_stops_the_server_in_one_line(tmp_path, env, args, message):
    done = run_server_cli(tmp_path, env, *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iggy-fast: configuration error: "), lines
    assert message in lines[0] and not (tmp_path / "d").exists()


async def test_environment_and_an_iggy_file_on_a_real_server(tmp_path):
    # IGGY_TCP_ADDRESS and IGGY_SYSTEM_PATH instead of flags (and over the file's values),
    # IGGY_TCP_ENABLED given explicitly, HTTP enabled by the file, QUIC and WebSocket by env.
    toml = tmp_path / "server.toml"
    toml.write_text(IGGY_STYLE_TOML)
    srv = ServerProcess(tmp_path / "data", by_env=True, args=["--config", str(toml)],
                        env={"IGGY_TCP_ENABLED": "true", "IGGY_QUIC_ENABLED": "true",
                             "IGGY_WEBSOCKET_ENABLED": "true"})
    srv.start()                                 # it listens where IGGY_TCP_ADDRESS says
    try:
        c = IggyClient(srv.address)
        await c.connect()
        await c.login_user(*ROOT)
        await c.create_stream("made-by-env")
    finally:
        assert srv.stop() == 0
    log = srv.log()
    for name, port in (("HTTP", srv.http_port), ("QUIC", srv.quic_port),
                       ("WebSocket", srv.websocket_port)):
        assert f"{name} listening on 127.0.0.1:{port}" in log
    assert log.count("accepted but not applied by this version") == 1
    assert "tcp.ipv6" in log and "Traceback" not in log
    assert not (tmp_path / "from-the-file").exists()
    # The data went to IGGY_SYSTEM_PATH: a server given that directory by flag has the stream.
    again = ServerProcess(tmp_path / "data").start()
    try:
        c = IggyClient(again.address)
        await c.connect()
        await c.login_user(*ROOT)
        assert (await c.get_stream("made-by-env")) is not None
    finally:
        assert again.stop() == 0


async def test_generated_root_password_is_shown_once(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "iggy_fast.cli", "server", "--data-dir", str(tmp_path / "d"),
           "--tcp-address", f"127.0.0.1:{port}"]
    env = clean_env()
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
