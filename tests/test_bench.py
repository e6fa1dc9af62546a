"""Smoke runs of every `iggy-fast bench` kind and of bench/peers.py: the counts reported are
what was sent and read (timing is not checked here; bench/ and BENCHMARKS.md are for that),
plus the benchmark client's own pieces: partial socket writes, TLS, per-message origins."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from array import array

import pytest

from iggy_fast import _wire
from iggy_fast.bench import runner
from iggy_fast.bench.actors import make_batch, restamp
from iggy_fast.client import BlockingClient
from iggy_fast.client.core import origin_timestamps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCHES, PER_BATCH = 20, 50


def args_for(kind, address, **overrides):
    parser = argparse.ArgumentParser()
    runner.add_arguments(parser)
    argv = [kind, "--batches", str(BATCHES), "--messages-per-batch", str(PER_BATCH),
            "--message-size", "200", "--quiet"]
    if address:
        argv += ["--address", address]
    for key, value in overrides.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


@pytest.mark.parametrize("kind,producers,consumers", [
    ("pinned-producer", 2, 0), ("pinned-consumer", 0, 2),
    ("pinned-producer-and-consumer", 2, 2), ("balanced-producer", 2, 0),
    ("consumer-group", 0, 3), ("end-to-end", 1, 1)])
def test_each_kind_counts_what_it_moved(server, kind, producers, consumers):
    args = args_for(kind, server.address, producers=max(producers, 1),
                    consumers=max(consumers, 1), partitions=3 if kind == "consumer-group" else 2)
    report = runner.run(args)
    totals = report["totals"]
    if producers:
        assert totals["producer"]["messages"] == producers * BATCHES * PER_BATCH
        assert totals["producer"]["actors"] == producers
        assert totals["producer"]["payload_bytes"] == producers * BATCHES * PER_BATCH * 200
        # Every batch send is one latency sample, all actors' samples merged in the total.
        assert totals["producer"]["latency_us"]["samples"] == producers * BATCHES
    if kind == "consumer-group":     # the group reads what one filler wrote, once
        assert totals["consumer"]["messages"] == BATCHES * PER_BATCH
        assert totals["consumer"]["actors"] == consumers
    elif consumers:
        assert totals["consumer"]["messages"] == consumers * BATCHES * PER_BATCH
    for role, total in totals.items():
        actors = [a for a in report["actors"] if a["role"] == role]
        assert total["latency_us"]["samples"] == sum(a["latency_us"]["samples"] for a in actors)
        lat = total["latency_us"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
        assert lat["max"] == max(a["latency_us"]["max"] for a in actors)
        # Wire bytes carry frame and message headers on top of the payload.
        assert total["wire_bytes"] > total["payload_bytes"]
    for actor in report["actors"]:
        assert actor["latency_us"]["p50"] <= actor["latency_us"]["max"]
        # A member that joins last may find the partitions already read by the others.
        assert actor["messages_per_second"] > 0 or kind == "consumer-group"
    if kind == "end-to-end":
        consumer = totals["consumer"]
        # One end-to-end sample per message read, not one per poll.
        assert consumer["end_to_end_us"]["samples"] == consumer["messages"]
        assert 0 < consumer["end_to_end_us"]["p50"] <= consumer["end_to_end_us"]["max"]


@pytest.mark.parametrize("kind", ["end-to-end", "pinned-producer-and-consumer"])
def test_fewer_consumers_than_producers_read_every_stream(server, kind):
    # 3 producers, 2 consumers: consumer 0 reads streams 0 and 2, consumer 1 stream 1.
    report = runner.run(args_for(kind, server.address, producers=3, consumers=2))
    read = {a["actor"]: a["messages"] for a in report["actors"] if a["role"] == "consumer"}
    assert read == {"consumer-0": 2 * BATCHES * PER_BATCH, "consumer-1": BATCHES * PER_BATCH}


def test_pinned_consumer_polls_for_the_duration(server):
    args = args_for("pinned-consumer", server.address, duration=0.6)
    report = runner.run(args)
    consumer = report["actors"][0]
    assert consumer["seconds"] >= 0.6
    # 1000 messages were filled; polling for 0.6 s goes round them again and again.
    assert consumer["messages"] > BATCHES * PER_BATCH
    assert consumer["messages"] % PER_BATCH == 0


@pytest.mark.parametrize("kind", ["consumer-group", "end-to-end",
                                  "pinned-producer-and-consumer"])
def test_duration_is_refused_where_consumers_read_once(kind):
    with pytest.raises(SystemExit, match="--duration does not apply"):
        runner.run(args_for(kind, "127.0.0.1:1", duration=1))


def test_tls_transport_against_a_started_server():
    report = runner.run(args_for("end-to-end", "", transport="tcp-tls"))
    assert report["settings"]["started_server"] is True
    assert report["settings"]["transport"] == "tcp-tls"
    assert report["totals"]["consumer"]["messages"] == BATCHES * PER_BATCH
    assert report["totals"]["consumer"]["end_to_end_us"]["samples"] == BATCHES * PER_BATCH


@pytest.mark.parametrize("transport", ["tcp", "tls", "quic", "ws", "http"])
def test_cli_bench_over_every_transport(server, tmp_path, transport):
    # `iggy-fast bench` as a user runs it: one producer and one consumer over the transport
    # (the shared server's listener for it; TLS-TCP needs a TLS listener: the bench starts one).
    out = tmp_path / "report.json"
    address = [] if transport == "tls" else \
        ["--address", runner.local_address(server, transport)]
    proc = subprocess.run(
        [sys.executable, "-m", "iggy_fast.cli", "bench", "pinned-producer-and-consumer",
         "--transport", transport, *address, "--batches", "5", "--messages-per-batch", "100",
         "--message-size", "100", "--quiet", "--output", str(out)],
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"transport {transport}" in proc.stdout
    report = json.loads(out.read_text())
    for role in ("producer", "consumer"):
        assert report["totals"][role]["messages"] == 500
        assert report["totals"][role]["latency_us"]["samples"] >= 5
        assert report["totals"][role]["wire_bytes"] > 500 * 100


def test_consumer_group_over_http_is_refused():
    with pytest.raises(SystemExit, match="no group membership"):
        runner.run(args_for("consumer-group", "127.0.0.1:1", transport="http"))


def test_a_server_that_does_not_start_says_why(monkeypatch):
    # The server's own one-line error reaches the benchmark's user instead of being
    # deleted with the temporary directory.
    monkeypatch.setenv("IGGY_TCP_ENABLED", "maybe")
    with pytest.raises(RuntimeError, match="IGGY_TCP_ENABLED"):
        runner.LocalServer(fsync=False)


def test_large_send_survives_partial_socket_writes(server):
    """With a small send buffer one sendmsg() writes only part of a 1 MB request; the client
    must write the rest (it used to wait for a reply to a request the server never got)."""
    stream = f"partial-{uuid.uuid4().hex[:8]}"
    with BlockingClient(server.address, timeout=10) as c:
        c.login()
        c.call(202, _wire.Writer().name(stream).getvalue())
        c.call(302, _wire.Writer().identifier(stream).u32(1).name("t").getvalue())
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        batch = make_batch(1000, 1000)
        assert c.send_batch(stream, "t", 0, batch, 1000) == 0
        assert c.bytes_sent > len(batch)
        got = 0
        while got < 1000:
            got += int.from_bytes(c.poll(stream, "t", 0, 1, got, 1000).body[12:16], "little")
        assert got == 1000
        c.call(203, _wire.Writer().identifier(stream).getvalue())


def _reply_body(*batches) -> bytes:
    count = sum(_wire.batch_info(b)[3] for b in batches)
    return (0).to_bytes(4, "little") + (0).to_bytes(8, "little") + \
        count.to_bytes(4, "little") + b"".join(bytes(b) for b in batches)


def test_origin_timestamps_match_the_full_decoder():
    uniform = make_batch(5, 64, origin_us=1_000)
    restamp(uniform, 2_000_000)                 # new origin, checksum still valid
    assert _wire.validate_batch(uniform, 5) == 0
    mixed = _wire.build_batch([(1, b"a" * 10, b"", 0), (2, b"b" * 300, b"", 7),
                               (3, b"c" * 10, b"\x01" * 12, 4_000_000_000)], 5_000)
    body = _reply_body(uniform, mixed)
    deltas = array("I")
    records = origin_timestamps(body, deltas)
    assert records == [(2_000_000, 5), (5_000, 3)]
    ours = [origin + d for (origin, n), d in
            zip([r for r in records for _ in range(r[1])], deltas)]
    decoded = _wire.iter_messages(memoryview(body)[16:])
    assert ours == [m[2] for m in decoded]


def test_cli_starts_its_own_server_and_writes_json(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "iggy_fast.cli", "bench", "pinned-producer",
                           "--batches", "10", "--messages-per-batch", "10", "--quiet",
                           "--output", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "producer-0" in proc.stdout and "total producers" in proc.stdout
    assert "payload MB/s" in proc.stdout and "wire MB/s" in proc.stdout
    report = json.loads(out.read_text())
    assert report["totals"]["producer"]["messages"] == 100
    assert report["totals"]["producer"]["latency_us"]["samples"] == 10
    assert report["machine"]["cpus"] >= 1 and report["machine"]["cpu_model"]
    assert report["settings"]["messages_per_batch"] == 10
    assert report["settings"]["started_server"] is True


def test_help_documents_every_option():
    proc = subprocess.run([sys.executable, "-m", "iggy_fast.cli", "bench", "--help"],
                          capture_output=True, text=True, timeout=60)
    for option in ("--producers", "--consumers", "--streams", "--partitions", "--message-size",
                   "--messages-per-batch", "--batches", "--duration", "--transport", "--fsync",
                   "--address", "--output", "tls", "quic", "ws", "http", "--tls-ca-file", "--rate-limit"):
        assert option in proc.stdout


def _peers(tmp_path, *argv):
    out = tmp_path / "peers.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "peers.py"), "3000", "1",
                           *argv, "--output", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text())


def test_peers_iggy_fast_part_writes_every_round(tmp_path):
    stdout, report = _peers(tmp_path, "--servers", "iggy-fast")
    assert [(r["server"], r["phase"], r["messages"]) for r in report["rounds"]] == [
        ("iggy-fast", "produce", 3000), ("iggy-fast", "consume", 3000)]
    for r in report["rounds"]:
        assert r["round"] == 1 and r["client"] == "iggy-fast BlockingClient"
        assert r["payload_mb_per_second"] == pytest.approx(r["messages_per_second"] * 1000 / 1e6)
        assert r["wire_mb_per_second"] > r["payload_mb_per_second"]
    assert "round 1 iggy-fast" in stdout and "payload MB/s" in stdout and "wire MB/s" in stdout
    assert report["best"]["iggy-fast"]["consume"]["messages"] == 3000


@pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("redis-benchmark")
                         and shutil.which("nats-server")),
                    reason="needs redis-server, redis-benchmark and nats-server")
def test_peers_redis_and_nats_read_back_everything(tmp_path):
    pytest.importorskip("redis")
    _, report = _peers(tmp_path, "--servers", "redis,nats")
    clients = {(r["server"], r["phase"], r["client"]): r["messages"] for r in report["rounds"]}
    assert clients == {
        ("redis", "produce", "redis-py + hiredis, pipelines of 1000"): 3000,
        ("redis", "produce", "redis-benchmark -c 1 -P 1000"): 3000,
        ("redis", "consume", "redis-py + hiredis"): 3000,
        ("redis", "consume", "lean RESP reader"): 3000,
        ("nats", "produce", "lean NATS protocol client"): 3000,
        ("nats", "consume", "lean NATS protocol client"): 3000}
    for r in report["rounds"]:
        assert r["wire_mb_per_second"] > r["payload_mb_per_second"] > 0


def test_chart_draws_bench_and_peers_results(server, tmp_path):
    report = runner.run(args_for("end-to-end", server.address))
    (tmp_path / "end-to-end.json").write_text(json.dumps(report))
    _peers(tmp_path, "--servers", "iggy-fast")          # writes tmp_path/peers.json
    out = tmp_path / "chart.svg"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "chart.py"),
                           str(tmp_path), str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    from xml.dom import minidom
    texts = [t.firstChild.data for t in minidom.parse(str(out)).getElementsByTagName("text")]
    for label in ("end-to-end (producers)", "end-to-end (consumers) batch",
                  "end-to-end per message, end to end", "iggy-fast produce (iggy-fast "
                  "BlockingClient)", "iggy-fast consume (iggy-fast BlockingClient)"):
        assert label in texts
    # One dot per percentile (p50 ... p99.9, max) for each of the three latency rows.
    assert len(minidom.parse(str(out)).getElementsByTagName("title")) == 3 * 6


def test_producers_send_for_the_duration(server):
    # The seconds reported are read from the clock the loop stops by: never short of it.
    report = runner.run(args_for("pinned-producer", server.address, duration=0.3))
    producer = report["actors"][0]
    assert producer["seconds"] >= 0.3
    assert producer["messages"] % PER_BATCH == 0 and producer["messages"] > 0


def test_rate_limit_in_messages_holds_the_rate_on_a_fixed_timeline(server):
    # 5000 msg/s at 50 per batch: one batch every 10 ms, 20 batches take at least 190 ms.
    report = runner.run(args_for("pinned-producer", server.address, producers=2,
                                 rate_limit=5000))
    for producer in report["actors"]:
        assert producer["messages"] == BATCHES * PER_BATCH
        assert producer["seconds"] >= (BATCHES - 1) * 0.010
        assert producer["messages_per_second"] <= 5000 * BATCHES / (BATCHES - 1) + 1
        due, trip = producer["scheduled_latency_us"], producer["latency_us"]
        # One sample per batch, each from its due time: never shorter than its round trip.
        assert due["samples"] == trip["samples"] == BATCHES
        for key in ("p50", "p99", "max"):
            assert due[key] >= trip[key]
    total = report["totals"]["producer"]["scheduled_latency_us"]
    assert total["samples"] == 2 * BATCHES
    assert total["max"] == max(a["scheduled_latency_us"]["max"] for a in report["actors"])


def test_rate_limit_in_bytes_paces_the_payload(server):
    # 1 MB/s of 200-byte messages, 50 per batch: 10 kB per batch, one every 10 ms.
    report = runner.run(args_for("balanced-producer", server.address, rate_limit="1MB"))
    producer = report["actors"][0]
    assert producer["seconds"] >= (BATCHES - 1) * 0.010
    assert producer["payload_mb_per_second"] <= 1.0 * BATCHES / (BATCHES - 1) + 0.01


def test_an_unreachable_rate_shows_the_backlog_from_the_due_times(server):
    # 10 M msg/s at 50 per batch: a batch is due every 5 us, far faster than a round trip, so
    # every batch is late and the last waits behind all the others. Batch 20 is due at 95 us
    # and sent after the 19 round trips before it, at least 9 of which take the median or
    # longer: from its due time to its arrival (end to end) and to its reply it took at least
    # 9 medians less 95 us; stamped with its send time instead, it would show ~1 round trip.
    report = runner.run(args_for("end-to-end", server.address, rate_limit=10_000_000))
    producer, consumer = report["totals"]["producer"], report["totals"]["consumer"]
    assert consumer["end_to_end_us"]["samples"] == BATCHES * PER_BATCH
    assert producer["scheduled_latency_us"]["samples"] == BATCHES
    backlog = 9 * producer["latency_us"]["p50"] - 95
    assert producer["scheduled_latency_us"]["max"] >= backlog
    assert consumer["end_to_end_us"]["max"] >= backlog - 100   # clocks of two processes


@pytest.mark.parametrize("rate,kind,message", [
    ("fast", "pinned-producer", "messages per second"),
    ("0", "pinned-producer", "above 0"),
    ("0MB", "end-to-end", "above 0"),
    ("1000", "pinned-consumer", "paces producers")])
def test_bad_rate_limits_are_refused(rate, kind, message):
    with pytest.raises(SystemExit, match=message):
        runner.run(args_for(kind, "127.0.0.1:1", rate_limit=rate))
