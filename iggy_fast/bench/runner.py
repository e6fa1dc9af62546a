"""Runs a benchmark: starts (or reaches) a server, creates streams and topics, spreads actors
over processes, shows progress, and reports throughput and latency percentiles.

Kinds (as in iggy-bench):
  pinned-producer               each producer writes to its own stream: partition 0 with one
                                partition (the default, as iggy-bench), or the stream's
                                --partitions in turn, one batch each
  pinned-consumer               first fills the streams, then each consumer reads its own
  pinned-producer-and-consumer  producers and consumers at the same time, pinned per stream
                                (with fewer consumers than producers, each consumer reads the
                                streams of several producers)
  balanced-producer             producers spread batches over all partitions of one topic
  consumer-group                first fills one topic, then consumers in one group share its
                                partitions (server-side assignment, offsets committed per poll)
  end-to-end                    produce and consume concurrently; latency from send to receipt,
                                one sample per message (arrival minus origin timestamp); streams
                                shared out among consumers as in pinned-producer-and-consumer

Reported per actor and in total: messages/s; payload MB/s (messages x --message-size, in
10^6 bytes/s); wire MB/s (what the actors' sockets carried in the data's direction, request or
reply frames and batch/message headers included); latency of each batch round trip (send or
poll) at p50, p90, p95, p99, p99.9 and max in microseconds, the totals over every actor's
samples merged.

--rate-limit: each producer sends at a steady rate, in messages per second (a plain number,
`--rate-limit 50000`) or payload bytes per second (a size, `--rate-limit 50MB`, `10MiB`): batch k
is due k batch-intervals after the start, and a producer that is late sends at once, so the rate
holds over the run. Producers then also report the latency from each batch's due time to its
reply, which counts the time a batch waited for a slow predecessor (no coordinated omission),
and end-to-end runs take the due time as the messages' origin.

--transport: tcp, tls (TCP over TLS), quic, ws (WebSocket) or http; the actors reach the server
over it (bench/links.py: TCP and TLS over the raw-frame BlockingClient, the others over the
async client's Link), and a started server is reached on that transport's listener.
consumer-group is refused over HTTP, whose REST API has no group membership.

--duration: producers send for that many seconds instead of --batches. With pinned-consumer
the streams are first filled with --batches batches, then each consumer polls for the duration,
starting again at offset 0 whenever it has read everything. consumer-group,
pinned-producer-and-consumer and end-to-end read what was produced once, so they need --batches.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import queue
import socket
import sys
import threading
import time

from iggy_fast import _wire
from iggy_fast.bench import links
from iggy_fast.config import parse_size
from iggy_fast.testing import ServerProcess

KINDS = ("pinned-producer", "pinned-consumer", "pinned-producer-and-consumer",
         "balanced-producer", "consumer-group", "end-to-end")
TRANSPORTS = ("tcp", "tls", "quic", "ws", "http", "tcp-tls")     # tcp-tls: the old name of tls
PERCENTILES = (50, 90, 95, 99, 99.9)


def percentile(sorted_values, p):
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values))) - 1))
    return sorted_values[k]


def distribution(samples) -> dict:
    """p50 ... p99.9 and max of the samples, and how many there were."""
    ordered = sorted(samples)
    out = {f"p{p:g}": percentile(ordered, p) for p in PERCENTILES}
    out["max"] = ordered[-1] if ordered else 0.0
    out["samples"] = len(ordered)
    return out


def _rates(messages, payload, wire, seconds) -> dict:
    seconds = seconds or 1e-9
    return {"messages_per_second": messages / seconds,
            "payload_mb_per_second": payload / seconds / 1e6,
            "wire_mb_per_second": wire / seconds / 1e6}


# Latency samples an actor may return, and the key of their distribution in the report.
SAMPLES = (("latencies_us", "latency_us"), ("scheduled_us", "scheduled_latency_us"),
           ("end_to_end_us", "end_to_end_us"))


def summarize(result: dict) -> dict:
    out = {"actor": result["actor"], "role": result["role"], "messages": result["messages"],
           "payload_bytes": result["payload_bytes"], "wire_bytes": result["wire_bytes"],
           "seconds": round(result["seconds"], 4),
           **_rates(result["messages"], result["payload_bytes"], result["wire_bytes"],
                    result["seconds"])}
    for samples, key in SAMPLES:
        if samples in result:
            out[key] = distribution(result[samples])
    return out


def totals(raw_results) -> dict:
    """Per role: summed counts over the slowest actor's time, and the latency percentiles of
    every actor's samples merged (not an average of the actors' percentiles)."""
    out = {}
    for role in ("producer", "consumer"):
        group = [r for r in raw_results if r["role"] == role]
        if not group:
            continue
        seconds = max(r["seconds"] for r in group)
        messages = sum(r["messages"] for r in group)
        payload = sum(r["payload_bytes"] for r in group)
        wire = sum(r["wire_bytes"] for r in group)
        out[role] = {"actors": len(group), "messages": messages, "payload_bytes": payload,
                     "wire_bytes": wire, "seconds": round(seconds, 4),
                     **_rates(messages, payload, wire, seconds)}
        for samples, key in SAMPLES:
            merged = [x for r in group if samples in r for x in r[samples]]
            if any(samples in r for r in group):
                out[role][key] = distribution(merged)
    return out


class LocalServer(ServerProcess):
    """A server started for the benchmark on a free port with a temporary data directory.

    With `tls`, its TCP listener speaks TLS with a self-signed certificate it makes at start;
    `ca_file` is that certificate, for clients to validate against. `env` adds IGGY_*
    settings (e.g. {"IGGY_TCP_QUICKACK": "false"}).
    """

    def __init__(self, fsync: bool, tls: bool = False, env: dict | None = None):
        """`tls`: TCP speaks TLS (self-signed); QUIC always does, with its own certificate."""
        super().__init__(env={"IGGY_SYSTEM_PARTITION_ENFORCE_FSYNC": "true" if fsync else "false",
                              "IGGY_TCP_TLS_ENABLED": "true" if tls else "false",
                              **(env or {})})
        self.ca_file = (os.path.join(self.data_dir, "certs", "iggy_cert.pem") if tls
                        else None)
        try:
            self.start()
        except RuntimeError as e:
            self.stop()
            raise RuntimeError(f"the benchmark's server did not start:\n{str(e)[-2000:]}") \
                from None

    def stop(self) -> None:
        super().stop()
        self.cleanup()


def _connection(args) -> dict:
    """How actors and setup reach the server (what links.connect reads from a spec)."""
    return {"transport": args.transport, "address": args.address,
            "tls_ca_file": args.tls_ca_file or None, "tls_domain": args.tls_domain}


def _client(args):
    return links.connect(_connection(args))


def _setup(args) -> list[tuple[str, str]]:
    """Create the run's streams, one topic each; returns [(stream, topic)].

    Stream names carry a run id, so runs against a long-lived server do not collide; the
    streams are deleted again by `_teardown`.
    """
    client = _client(args)
    run_id = f"{os.getpid()}-{int(time.time())}"
    names = []
    options = b""
    if args.fsync:
        options = (b"\x02" + (13).to_bytes(4, "little") + b"enforce_fsync"
                   + b"\x03" + (1).to_bytes(4, "little") + b"\x01")
    for i in range(args.streams):
        stream = f"bench-{run_id}-{i}"
        client.call(202, _wire.Writer().name(stream).getvalue())
        client.call(302, _wire.Writer().identifier(stream).u32(args.partitions).name("topic")
                    .raw(options).getvalue())
        names.append((stream, "topic"))
    client.close()
    return names


def _teardown(args, names) -> None:
    client = _client(args)
    for stream, _topic in names:
        client.call(203, _wire.Writer().identifier(stream).getvalue())
    client.close()


def _progress(counter, total, stop, stream=sys.stderr):
    start = time.monotonic()
    while not stop.wait(0.5):
        done = counter.value
        rate = done / max(time.monotonic() - start, 1e-9)
        if total:
            width = 30
            filled = int(width * min(done, total) / total)
            stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} "
                         f"messages  {rate:,.0f} msg/s")
        else:
            stream.write(f"\r{done:,} messages  {rate:,.0f} msg/s")
        stream.flush()
    stream.write("\n")


def _run_actors(specs, args):
    ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
    from iggy_fast.bench import actors
    counter = ctx.Value("q", 0)
    results = ctx.Queue()
    procs = [ctx.Process(target=getattr(actors, role), args=(spec, counter, results))
             for role, spec in specs]
    group_total = max((spec["expected"] for role, spec in specs if role == "group_consumer"),
                      default=0)
    total = group_total + sum(spec.get("expected", spec["batches"] * spec["messages_per_batch"])
                              for role, spec in specs
                              if not spec.get("duration") and role != "group_consumer")
    stop = threading.Event()
    bar = None
    if not args.quiet:
        bar = threading.Thread(target=_progress, args=(counter, total, stop), daemon=True)
        bar.start()
    for p in procs:
        p.start()
    collected = []
    try:
        while len(collected) < len(procs):
            try:
                collected.append(results.get(timeout=1))
            except queue.Empty:
                # An actor that died never reports: stop waiting for it.
                failed = [p.exitcode for p in procs if p.exitcode]
                if failed:
                    raise RuntimeError(f"{len(failed)} benchmark actors failed "
                                       f"(exit codes {failed})") from None
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
        stop.set()
        if bar:
            bar.join()
    return collected


def batch_interval(args) -> float:
    """Seconds between a producer's batches under --rate-limit (0: as fast as it can)."""
    if not args.rate_limit:
        return 0.0
    text = args.rate_limit.strip()
    try:
        per_second = float(text)
        work = args.messages_per_batch                          # messages per second
    except ValueError:
        try:
            per_second = parse_size(text)
        except ValueError:
            raise SystemExit(f"--rate-limit {text!r}: messages per second (50000) or bytes "
                             f"per second (50MB)") from None
        work = args.messages_per_batch * args.message_size      # payload bytes per second
    if not 0 < per_second < float("inf"):
        raise SystemExit("--rate-limit must be above 0")
    return work / per_second


def _check(args) -> None:
    """Refuse combinations that would otherwise be silently ignored."""
    if args.kind not in KINDS:
        raise SystemExit(f"unknown kind {args.kind}; one of {', '.join(KINDS)}")
    if args.duration and args.kind in ("consumer-group", "pinned-producer-and-consumer",
                                       "end-to-end"):
        raise SystemExit(f"--duration does not apply to {args.kind}: its consumers read what "
                         f"was produced once; use --batches")
    if args.duration < 0 or args.batches < 1 or args.messages_per_batch < 1:
        raise SystemExit("--duration must be >= 0, --batches and --messages-per-batch >= 1")
    if args.transport in ("tcp", "ws", "http") and args.tls_ca_file:
        raise SystemExit("--tls-ca-file needs --transport tls or quic")
    if args.transport == "http" and args.kind == "consumer-group":
        raise SystemExit("consumer-group over HTTP: the REST API has no group membership "
                         "(join, assignment); use tcp, tls, quic or ws")
    if args.rate_limit and args.kind in ("pinned-consumer", "consumer-group"):
        raise SystemExit(f"--rate-limit paces producers; {args.kind} measures consumers only")
    batch_interval(args)


def run(args) -> dict:
    _check(args)
    server = None
    args.started_server = not args.address
    if not args.address:
        server = LocalServer(args.fsync, tls=args.transport in ("tls", "tcp-tls"))
        args.address = local_address(server, args.transport)
        if server.ca_file:
            args.tls_ca_file = server.ca_file
    try:
        return _run(args)
    finally:
        if server:
            server.stop()


def local_address(server, transport: str) -> str:
    """The host:port of `transport`'s listener on a ServerProcess."""
    port = {"quic": server.quic_port, "ws": server.websocket_port,
            "http": server.http_port}.get(transport, server.tcp_port)
    return f"127.0.0.1:{port}"


def _spec(args, name, targets, **extra):
    spec = {"name": name, "targets": targets,
            "messages_per_batch": args.messages_per_batch, "message_size": args.message_size,
            "batches": args.batches, "duration": args.duration, "end_to_end": False,
            "idle_timeout": 10.0, **_connection(args)}
    spec.update(extra)
    return spec


def _run(args) -> dict:
    kind = args.kind
    if kind in ("pinned-producer", "pinned-consumer", "pinned-producer-and-consumer",
                "end-to-end"):
        args.streams = max(args.streams, args.producers, args.consumers)
    names = _setup(args)
    per_stream = [[(s, t, p) for p in range(args.partitions)] for s, t in names]
    everything = [target for targets in per_stream for target in targets]
    specs = []
    interval = batch_interval(args)
    if kind in ("pinned-producer", "pinned-producer-and-consumer", "end-to-end"):
        specs += [("producer", _spec(args, f"producer-{i}", per_stream[i % len(per_stream)],
                                     end_to_end=kind == "end-to-end", interval=interval))
                  for i in range(args.producers)]
    if kind == "balanced-producer":
        specs += [("producer", _spec(args, f"producer-{i}", everything, interval=interval))
                  for i in range(args.producers)]
    if kind == "pinned-consumer":
        fill = [("producer", _spec(args, f"filler-{i}", per_stream[i], duration=0))
                for i in range(args.consumers)]
        _run_actors(fill, args)   # fill first; not measured
    if kind == "consumer-group":
        stream, topic = names[0]
        fill = [("producer", _spec(args, f"filler-{i}", everything, duration=0))
                for i in range(args.producers)]
        _run_actors(fill, args)   # fill first; not measured
        client = _client(args)
        client.call(602, _wire.Writer().identifier(stream).identifier(topic)
                    .name("bench-group").getvalue())
        client.close()
        expected = args.producers * args.batches * args.messages_per_batch
        specs += [("group_consumer", _spec(args, f"consumer-{i}", everything, duration=0,
                                           expected=expected, group="bench-group",
                                           idle_timeout=5.0))
                  for i in range(args.consumers)]
    if kind in ("pinned-consumer", "pinned-producer-and-consumer", "end-to-end"):
        duration = args.duration if kind == "pinned-consumer" else 0
        for i in range(args.consumers):
            # Fewer consumers than producers: the producers' streams are shared out, consumer
            # i reading streams i, i + consumers, ... (fewer processes polling, on few cores).
            streams = range(i, args.producers, args.consumers) \
                if kind != "pinned-consumer" and args.consumers < args.producers else [i]
            targets = [t for s in streams for t in per_stream[s % len(per_stream)]]
            specs.append(("consumer", _spec(
                args, f"consumer-{i}", targets, duration=duration,
                expected=len(streams) * args.batches * args.messages_per_batch,
                end_to_end=kind == "end-to-end")))
    started = time.time()
    try:
        raw = _run_actors(specs, args)
    finally:
        _teardown(args, names)
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "output")}
    return {"kind": kind, "started_at": started, "settings": settings, "machine": machine(),
            "actors": [summarize(r) for r in raw], "totals": totals(raw)}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_model": cpu_model(), "cpus": os.cpu_count(), "memory_bytes": mem,
            "hostname": socket.gethostname()}


def _latency_cells(lat: dict) -> str:
    return "".join(f"{lat['p' + format(p, 'g')]:>9.0f}" for p in PERCENTILES) + \
        f"{lat['max']:>9.0f}"


def _rate_text(rate: str) -> str:
    try:
        return f"{float(rate):,.0f} msg/s"
    except ValueError:
        return f"{rate}/s"


def print_report(report: dict, out=sys.stdout) -> None:
    settings = report["settings"]
    rate = settings.get("rate_limit")
    out.write(f"kind {report['kind']}, transport {settings.get('transport', 'tcp')}, "
              f"fsync {'on' if settings.get('fsync') else 'off'}, "
              f"{'rate limit ' + _rate_text(rate) + ' per producer, ' if rate else ''}"
              f"{'server started by the bench' if settings.get('started_server') else 'server at ' + str(settings.get('address'))}\n")
    percentiles = "".join(f"{'p' + format(p, 'g'):>9}" for p in PERCENTILES) + f"{'max':>9}"
    out.write(f"{'actor':<16}{'messages':>11}{'msg/s':>12}{'payload':>9}{'wire':>8}"
              + percentiles + "\n")
    out.write(f"{'':<39}{'MB/s':>9}{'MB/s':>8}{'batch round trip latency, us':>54}\n")
    rows = [(r["actor"], r) for r in report["actors"]]
    rows += [(f"total {role}s", t) for role, t in report["totals"].items()]
    for name, r in rows:
        out.write(f"{name:<16}{r['messages']:>11,}{r['messages_per_second']:>12,.0f}"
                  f"{r['payload_mb_per_second']:>9,.0f}{r['wire_mb_per_second']:>8,.0f}"
                  + _latency_cells(r["latency_us"]) + "\n")
    for key, title in (("scheduled_latency_us", "batch latency from its due time to the "
                                                "reply, us (waiting for its slot included)"),
                       ("end_to_end_us", "end-to-end latency per message, from its origin "
                                         "timestamp to its arrival at a consumer, us")):
        measured = [(name, r[key]) for name, r in rows if key in r]
        if measured:
            out.write(f"{title}\n{'actor':<16}{'samples':>11}{'':>29}{percentiles}\n")
            for name, lat in measured:
                out.write(f"{name:<16}{lat['samples']:>11,}{'':>29}{_latency_cells(lat)}\n")
    wire = ("bytes on the actors' sockets (frames and headers included)"
            if settings.get("transport", "tcp") in ("tcp", "tls", "tcp-tls") else
            "the Iggy frames the actors carried (header and body; not the transport's own "
            "framing)")
    out.write(f"payload MB/s = messages x message size; wire MB/s = {wire}; MB = 10^6 bytes\n")


def add_arguments(parser) -> None:
    parser.add_argument("kind", choices=KINDS, help="what to measure (see above)")
    parser.add_argument("--producers", type=int, default=1, help="producer processes")
    parser.add_argument("--consumers", type=int, default=1, help="consumer processes")
    parser.add_argument("--streams", type=int, default=1,
                        help="streams (pinned kinds use at least one per actor)")
    parser.add_argument("--partitions", type=int, default=1, help="partitions per topic")
    parser.add_argument("--message-size", type=int, default=1000, help="payload bytes")
    parser.add_argument("--messages-per-batch", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=1000,
                        help="batches per producer (and what each consumer expects)")
    parser.add_argument("--duration", type=float, default=0,
                        help="seconds to run instead of a batch count: producers send for "
                             "that long; pinned-consumer polls for that long, re-reading from "
                             "offset 0 (refused by the other consumer kinds)")
    parser.add_argument("--rate-limit", default="",
                        help="per producer: messages per second (50000) or payload bytes per "
                             "second (50MB, 10MiB), sent on a fixed timeline; adds latency "
                             "from each batch's due time (default: as fast as possible)")
    parser.add_argument("--transport", choices=TRANSPORTS, default="tcp",
                        help="tcp; tls (TCP over TLS: a started server gets a self-signed "
                             "certificate, which the actors validate); quic; ws (WebSocket); "
                             "http (REST; no consumer-group). --address is then that "
                             "transport's listener")
    parser.add_argument("--tls-ca-file", default="",
                        help="with tls or quic and --address: CA file to validate the "
                             "server's certificate (without one it is not checked)")
    parser.add_argument("--tls-domain", default="localhost",
                        help="with tls or quic: the name the server's certificate must carry")
    parser.add_argument("--fsync", action="store_true",
                        help="enforce fsync on the benchmark topics (ack after fdatasync)")
    parser.add_argument("--address", default="",
                        help="host:port of a running server; default: start one in a temp dir")
    parser.add_argument("--output", help="write the full results as JSON to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args) -> int:
    report = run(args)
    print_report(report)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
    return 0
