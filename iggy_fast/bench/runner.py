"""Runs a benchmark: starts (or reaches) a server, creates streams and topics, spreads actors
over processes, shows progress, and reports throughput and latency percentiles.

Kinds (as in iggy-bench):
  pinned-producer               each producer writes to its own stream, partition 0
  pinned-consumer               first fills the streams, then each consumer reads its own
  pinned-producer-and-consumer  producers and consumers at the same time, pinned per stream
  balanced-producer             producers spread batches over all partitions of one topic
  consumer-group                first fills one topic, then consumers in one group share its
                                partitions (server-side assignment, offsets committed per poll)
  end-to-end                    produce and consume concurrently; latency from send to receipt
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from iggy_fast import _wire
from iggy_fast.client import BlockingClient

KINDS = ("pinned-producer", "pinned-consumer", "pinned-producer-and-consumer",
         "balanced-producer", "consumer-group", "end-to-end")
PERCENTILES = (50, 90, 95, 99, 99.9)


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values))) - 1))
    return sorted_values[k]


def summarize(result: dict) -> dict:
    lat = sorted(result.get("latencies_us", []))
    seconds = result["seconds"] or 1e-9
    out = {"actor": result["actor"], "role": result["role"], "messages": result["messages"],
           "bytes": result["bytes"], "seconds": round(seconds, 4),
           "messages_per_second": result["messages"] / seconds,
           "mb_per_second": result["bytes"] / seconds / 1e6,
           "latency_us": {f"p{p:g}": percentile(lat, p) for p in PERCENTILES}}
    out["latency_us"]["max"] = lat[-1] if lat else 0.0
    e2e = sorted(result.get("end_to_end_us", []))
    if e2e:
        out["end_to_end_us"] = {f"p{p:g}": percentile(e2e, p) for p in PERCENTILES}
        out["end_to_end_us"]["max"] = e2e[-1]
    return out


class LocalServer:
    """A server started for the benchmark on a free port with a temporary data directory."""

    def __init__(self, fsync: bool):
        self.dir = tempfile.mkdtemp(prefix="iggy-bench-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        env = {**os.environ, "IGGY_SYSTEM_PARTITION_ENFORCE_FSYNC": "true" if fsync else "false"}
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iggy_fast.cli", "server", "--data-dir",
             os.path.join(self.dir, "data"), "--tcp-address", self.address,
             "--with-default-root-credentials"], env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError("the benchmark's server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _setup(args) -> list[tuple[str, str]]:
    """Create the run's streams, one topic each; returns [(stream, topic)].

    Stream names carry a run id, so runs against a long-lived server do not collide; the
    streams are deleted again by `_teardown`.
    """
    client = BlockingClient(args.address)
    client.login()
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
    client = BlockingClient(args.address)
    client.login()
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
    collected = [results.get() for _ in procs]
    for p in procs:
        p.join()
    stop.set()
    if bar:
        bar.join()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise RuntimeError(f"{len(failed)} benchmark actors failed")
    return collected


def run(args) -> dict:
    if args.kind not in KINDS:
        raise SystemExit(f"unknown kind {args.kind}; one of {', '.join(KINDS)}")
    server = None
    if not args.address:
        server = LocalServer(args.fsync)
        args.address = server.address
    try:
        return _run(args)
    finally:
        if server:
            server.stop()


def _spec(args, name, targets, **extra):
    spec = {"name": name, "address": args.address, "targets": targets,
            "messages_per_batch": args.messages_per_batch, "message_size": args.message_size,
            "batches": args.batches, "duration": args.duration, "end_to_end": False,
            "idle_timeout": 10.0}
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
    if kind in ("pinned-producer", "pinned-producer-and-consumer", "end-to-end"):
        specs += [("producer", _spec(args, f"producer-{i}", per_stream[i % len(per_stream)],
                                     end_to_end=kind == "end-to-end"))
                  for i in range(args.producers)]
    if kind == "balanced-producer":
        specs += [("producer", _spec(args, f"producer-{i}", everything))
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
        client = BlockingClient(args.address)
        client.login()
        client.call(602, _wire.Writer().identifier(stream).identifier(topic)
                    .name("bench-group").getvalue())
        client.close()
        expected = args.producers * args.batches * args.messages_per_batch
        specs += [("group_consumer", _spec(args, f"consumer-{i}", everything, duration=0,
                                           expected=expected, group="bench-group",
                                           idle_timeout=5.0))
                  for i in range(args.consumers)]
    if kind in ("pinned-consumer", "pinned-producer-and-consumer", "end-to-end"):
        if args.duration and kind != "pinned-consumer":
            raise SystemExit("consumers need --batches (they read what the producers sent)")
        expected = args.batches * args.messages_per_batch
        specs += [("consumer", _spec(args, f"consumer-{i}", per_stream[i % len(per_stream)],
                                     expected=expected, duration=0,
                                     end_to_end=kind == "end-to-end"))
                  for i in range(args.consumers)]
    started = time.time()
    try:
        results = [summarize(r) for r in _run_actors(specs, args)]
    finally:
        _teardown(args, names)
    report = {"kind": kind, "started_at": started, "settings": {
        k: v for k, v in vars(args).items() if k not in ("func", "output")},
              "machine": machine(), "actors": results, "totals": totals(results)}
    return report


def totals(results) -> dict:
    out = {}
    for role in ("producer", "consumer"):
        group = [r for r in results if r["role"] == role]
        if not group:
            continue
        seconds = max(r["seconds"] for r in group)
        messages = sum(r["messages"] for r in group)
        nbytes = sum(r["bytes"] for r in group)
        out[role] = {"actors": len(group), "messages": messages, "bytes": nbytes,
                     "seconds": seconds, "messages_per_second": messages / seconds,
                     "mb_per_second": nbytes / seconds / 1e6}
    return out


def machine() -> dict:
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "memory_bytes": mem, "hostname": socket.gethostname()}


def print_report(report: dict, out=sys.stdout) -> None:
    out.write(f"kind {report['kind']}\n")
    header = (f"{'actor':<14}{'messages':>12}{'msg/s':>14}{'MB/s':>10}"
              + "".join(f"{'p' + format(p, 'g'):>9}" for p in PERCENTILES) + f"{'max':>9}\n")
    out.write(header)
    for r in report["actors"]:
        lat = r["latency_us"]
        out.write(f"{r['actor']:<14}{r['messages']:>12,}{r['messages_per_second']:>14,.0f}"
                  f"{r['mb_per_second']:>10,.0f}"
                  + "".join(f"{lat['p' + format(p, 'g')]:>9.0f}" for p in PERCENTILES)
                  + f"{lat['max']:>9.0f}\n")
    for role, t in report["totals"].items():
        out.write(f"total {role + 's':<10}{t['messages']:>10,}{t['messages_per_second']:>14,.0f}"
                  f"{t['mb_per_second']:>10,.0f}\n")
    for r in report["actors"]:
        if "end_to_end_us" in r:
            e = r["end_to_end_us"]
            out.write(f"{r['actor']} end-to-end latency (us): "
                      + ", ".join(f"{k} {v:.0f}" for k, v in e.items()) + "\n")
    out.write("latencies are per batch round trip, in microseconds\n")


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
                        help="seconds to produce instead of a batch count (producer kinds)")
    parser.add_argument("--transport", choices=("tcp",), default="tcp",
                        help="only TCP today; QUIC, HTTP and WebSocket are separate issues")
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
