"""Server metrics: counters kept where the data already passes, per-second rates, consumer lag,
the process's figures, and two renderings of them (Prometheus text and the JSON rates
document), neither tied to a transport.

What is counted where. Nothing is counted per message: the hot path adds a few integers per
batch or per request.
- Messages and bytes in, per partition: the log's own append counters (`appended_messages`,
  `appended`; storage/log.py keeps them for durability): no extra work at all.
- Messages and bytes out, per partition: a poll adds its message count and reply bytes to
  `Partition.polled_messages` / `polled_bytes` (service/messages.py).
- Requests, per transport and command: count, errors (a reply with a non-zero status or an
  Eviction; an IggyError raised to the HTTP layer) and latency, from the request's `now` to
  its reply being ready (for a reply that waits, such as an fsync'd send, until it is), in a
  histogram of power-of-two microsecond buckets: `Dispatcher.handle` and `Dispatcher.call`
  hand their reply to `replied` / `called`.
- Connections accepted, per transport (connection.py).
Everything else is read when asked: stored messages, sizes and segments, consumer offsets
and their lag, open connections, process CPU, memory, threads and open files.

Rates. A periodic task (`tick`, every second, given `now`) appends each partition's four
cumulative counters to a ring of the last RING samples; the rate over the last 1, 10 or 60 s
is the difference across that many samples over the time between them. A rate so costs the
send and poll paths nothing; the tick costs O(partitions) once a second. The same tick
samples the process's and the machine's CPU time, so GetStats reports CPU use over the last
second (a delta since the previous sample, as Iggy does) rather than an average since start.

`[http.metrics] enabled = false` turns off what exists only for metrics (as in Iggy, where it
"disables metrics collection"): the request accounting and the tick. The per-partition totals
stay, being additions the log and the poll path make per batch anyway; GetStats then reports
CPU as an average since start and the machine's as its load average per core.

Lag, per consumer group and per individual consumer with a stored offset, and partition:
the committed offset is the stored one, the high watermark the partition's current offset
(that of its last message), the lag the messages stored after the committed one (every stored
message when nothing is committed), and the lag in seconds the append time of the newest
message less that of the committed one (of the oldest stored one without a commit; 0 when
nothing lags). The offsets of a named consumer are keyed by a hash of its name (offsets.py),
so an individual consumer is labelled by that key's number.
"""

from __future__ import annotations

import bisect
import inspect
import os
import resource
import shutil
import time
from collections import deque

from iggy_fast.protocol.codes import COMMANDS as PROTOCOL_COMMANDS
from iggy_fast.protocol.errors import IggyError
from iggy_fast.server.state import CONSUMER, GROUP, consumer_key

WINDOWS = (1, 10, 60)                  # seconds over which rates are given
RING = WINDOWS[-1] + 1                 # samples kept: one more than the longest window
# A request record: [count, errors, sum of µs, then BUCKETS + 1 histogram slots]. Slot k
# counts latencies of bit_length k, i.e. at most 2^k - 1 µs, so its bound is le 2^k µs:
# 1 µs up to 2^25 µs (33.5 s); the last slot is +Inf.
BUCKETS = 26
COUNT, ERRORS, SUM_US, SLOT0 = 0, 1, 2, 3
_OK = bytes(4)
_REPLY = 8                             # the command byte of a reply (an Eviction is 13)
_time_ns = time.time_ns                # read per request: a global, not an attribute lookup


class Metrics:
    """One per server (`server.metrics`); see the module docstring."""

    def __init__(self, server):
        self.server = server
        self.enabled = bool(server.cfg["http"]["metrics"]["enabled"])
        self.requests: dict[tuple[str, int], list[int]] = {}   # (transport, code) -> record
        self.accepted: dict[str, int] = {}                     # transport -> connections
        self.times: deque[int] = deque(maxlen=RING)            # µs of the last ticks
        # Partition identity -> (messages in, bytes in, messages out, bytes out) at each of
        # the last ticks (the newest last; aligned with `times` from the end).
        self.history: dict[int, deque] = {}
        # (µs, process CPU s, machine busy ticks, machine total ticks) of the last two ticks.
        self.cpu: deque[tuple] = deque(maxlen=2)
        if self.enabled:
            server.periodic_tasks.append((1.0, self.tick))

    # -- the hot path ----------------------------------------------------------------------

    def replied(self, transport: str, code: int, out, now: int):
        """Count a binary reply (the pieces from Dispatcher.handle, or an awaitable of them)
        and return it unchanged (an awaitable is counted when it completes)."""
        if type(out) is not list:
            return self._replied_later(transport, code, out, now)
        head = out[0]
        self.count(transport, code, head[60] != _REPLY or head[216:220] != _OK, now)
        return out

    async def _replied_later(self, transport: str, code: int, awaitable, now: int):
        out = await awaitable
        head = out[0]
        self.count(transport, code, head[60] != _REPLY or head[216:220] != _OK, now)
        return out

    def called(self, transport: str, code: int, result, now: int):
        """Count a served typed request (HTTP): its result, or an awaitable of it."""
        if inspect.isawaitable(result):
            return self._called_later(transport, code, result, now)
        self.count(transport, code, False, now)
        return result

    async def _called_later(self, transport: str, code: int, awaitable, now: int):
        try:
            result = await awaitable
        except IggyError:
            self.count(transport, code, True, now)
            raise
        self.count(transport, code, False, now)
        return result

    def count(self, transport: str, code: int, failed: bool, now: int) -> None:
        """One request of `code` over `transport` answered now, received at `now` (µs)."""
        us = _time_ns() // 1000 - now
        record = self.requests.get((transport, code))
        if record is None:
            record = self.requests[(transport, code)] = [0] * (SLOT0 + BUCKETS + 1)
        record[COUNT] += 1
        if failed:
            record[ERRORS] += 1
        if us > 0:              # the wall clock may step back: count that as no time
            record[SUM_US] += us
            k = us.bit_length()
            record[SLOT0 + (k if k < BUCKETS else BUCKETS)] += 1
        else:
            record[SLOT0] += 1

    def connected(self, transport: str) -> None:
        self.accepted[transport] = self.accepted.get(transport, 0) + 1

    # -- the tick --------------------------------------------------------------------------

    def tick(self, now: int) -> None:
        """Sample every partition's counters and the CPU times (a periodic task, each second)."""
        self.times.append(now)
        old, history = self.history, {}
        for part in partitions(self.server.state):
            log = part.log
            samples = old.get(part.identity)
            if samples is None:
                samples = deque(maxlen=RING)
            samples.append((log.appended_messages, log.appended, part.polled_messages,
                            part.polled_bytes))
            history[part.identity] = samples
        self.history = history
        self.cpu.append((now, time.process_time(), *machine_cpu()))

    def rates(self, part) -> dict[str, tuple[float, float, float, float]]:
        """"1s", "10s", "60s" -> (messages in, bytes in, messages out, bytes out) per second,
        over up to that many of the last ticks (zeros before there are two)."""
        samples = self.history.get(part.identity)
        out = {}
        for window in WINDOWS:
            k = min(window, len(samples) - 1) if samples else 0
            if k <= 0:
                out[f"{window}s"] = (0.0, 0.0, 0.0, 0.0)
                continue
            last, first = samples[-1], samples[-1 - k]
            seconds = (self.times[-1] - self.times[-1 - k]) / 1e6
            out[f"{window}s"] = tuple((a - b) / seconds for a, b in zip(last, first))
        return out

    def cpu_usage(self) -> tuple[float, float]:
        """(process CPU % of one core, machine CPU %) over the last second, as GetStats
        reports them; without two ticks, the process's average since start and the machine's
        load average per core."""
        if len(self.cpu) == 2:
            (t0, p0, b0, n0), (t1, p1, b1, n1) = self.cpu
            process = (p1 - p0) * 1e8 / (t1 - t0) if t1 > t0 else 0.0
            machine = (b1 - b0) * 100 / (n1 - n0) if n1 > n0 else 0.0
            return process, machine
        run_us = time.time_ns() // 1000 - self.server.started_at
        process = time.process_time() * 1e8 / run_us if run_us > 0 else 0.0
        return process, os.getloadavg()[0] / (os.cpu_count() or 1) * 100


# -- reading the state --------------------------------------------------------------------

def partitions(state):
    for stream in state.streams.values():
        for topic in stream.topics.values():
            yield from topic.partitions.values()


def timestamp_at(log, offset: int) -> int:
    """The append time of the message at `offset`, or of the first stored after it (a gap)."""
    segments = log.segments
    i = max(0, bisect.bisect_right(segments, offset, key=lambda s: s.base_offset) - 1)
    for seg in segments[i:]:
        ts = seg.timestamp_at(max(offset, seg.base_offset))
        if ts is not None:
            return ts
    return log.last_timestamp


def lag(log, committed: int | None) -> tuple[int, float]:
    """(messages, seconds) a consumer that committed `committed` (None: nothing) is behind."""
    first, end = log.first_offset, log.next_offset
    start = first if committed is None else max(committed + 1, first)
    behind = max(0, end - start)
    if not behind:
        return 0, 0.0
    at = committed if committed is not None and committed >= first else first
    return behind, max(0, log.last_timestamp - timestamp_at(log, at)) / 1e6


def consumer_lags(state):
    """Per partition with consumer offsets or groups: (topic, partition, kind, consumer id,
    name, committed offset or None, lag messages, lag seconds). Groups are listed on every
    partition of their topic, committed or not; individual consumers where they stored one."""
    for stream in state.streams.values():
        for topic in stream.topics.values():
            topic_groups = list(topic.extra.get("groups", {}).values())
            for part in topic.partitions.values():
                for group in topic_groups:
                    committed = part.offsets.get(consumer_key(GROUP, group.id))
                    yield (topic, part, GROUP, group.id, group.name, committed,
                           *lag(part.log, committed))
                for ckey, committed in part.offsets.values.items():
                    kind, _, ident = ckey.partition(".")
                    if int(kind) == CONSUMER:
                        yield (topic, part, CONSUMER, int(ident), ident, committed,
                               *lag(part.log, committed))


def machine_cpu() -> tuple[int, int]:
    """(busy, total) CPU ticks of the machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    total = sum(fields[:8])            # guest time is already counted in user time
    return total - fields[3] - (fields[4] if len(fields) > 4 else 0), total


def _count_dir(path: str) -> int:
    try:
        return len(os.listdir(path))
    except OSError:
        return 0


def process_figures() -> dict[str, float]:
    """This process's CPU seconds, memory, threads and open files (Linux /proc)."""
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/self/statm") as f:
            vms, rss = (int(x) * page for x in f.read().split()[:2])
    except OSError:
        vms, rss = 0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return {"cpu_seconds": time.process_time(), "resident_memory": rss, "virtual_memory": vms,
            "threads": _count_dir("/proc/self/task") or 1,
            "open_fds": _count_dir("/proc/self/fd"),
            "max_fds": -1 if soft == resource.RLIM_INFINITY else soft}


def command_name(code: int) -> str:
    """The command's name; "invalid" for a frame no known command could be read from."""
    command = PROTOCOL_COMMANDS.get(code)
    return command.name if command is not None else "invalid"


# -- Prometheus text exposition -----------------------------------------------------------

def _label(value) -> str:
    return str(value).replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Families:
    """Metric families in the order first declared, each with its HELP and TYPE lines."""

    def __init__(self):
        self.lines: dict[str, list[str]] = {}

    def declare(self, name: str, kind: str, text: str) -> list[str]:
        lines = self.lines[name] = [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        return lines

    def one(self, name: str, kind: str, text: str, value) -> None:
        self.declare(name, kind, text).append(f"{name} {value}")

    def render(self) -> str:
        return "\n".join(line for lines in self.lines.values() for line in lines) + "\n"


# Per-partition families: (name, kind, help).
_PARTITION_FAMILIES = (
    ("iggy_messages_sent_total", "counter", "Messages appended to the partition since start."),
    ("iggy_bytes_sent_total", "counter", "Bytes of batches appended to the partition since "
                                         "start."),
    ("iggy_messages_polled_total", "counter", "Messages polled from the partition since start."),
    ("iggy_bytes_polled_total", "counter", "Bytes of batches polled from the partition since "
                                           "start."),
    ("iggy_partition_messages", "gauge", "Messages stored in the partition."),
    ("iggy_partition_size_bytes", "gauge", "Bytes of the partition's segments."),
    ("iggy_partition_segments", "gauge", "Segments of the partition."),
    ("iggy_partition_high_watermark", "gauge", "Offset of the partition's last message."),
)
_LAG_FAMILIES = {
    GROUP: (("iggy_consumer_group_committed_offset", "gauge",
             "Offset a consumer group committed in the partition."),
            ("iggy_consumer_group_lag_messages", "gauge",
             "Messages stored after the group's committed offset."),
            ("iggy_consumer_group_lag_seconds", "gauge",
             "Append time of the partition's newest message less that of the group's "
             "committed one.")),
    CONSUMER: (("iggy_consumer_committed_offset", "gauge",
                "Offset a consumer committed in the partition."),
               ("iggy_consumer_lag_messages", "gauge",
                "Messages stored after the consumer's committed offset."),
               ("iggy_consumer_lag_seconds", "gauge",
                "Append time of the partition's newest message less that of the consumer's "
                "committed one.")),
}


def prometheus(server) -> str:
    """Every metric in the Prometheus text exposition format (version 0.0.4)."""
    state, metrics = server.state, server.metrics
    f = _Families()
    totals = state.totals()
    for key in ("streams", "topics", "partitions", "segments", "messages"):
        f.one(f"iggy_{key}", "gauge", f"{key.capitalize()} stored.", totals[key])
    f.one("iggy_stored_bytes", "gauge", "Bytes of all segments.", totals["bytes"])

    part_lines = [f.declare(*family) for family in _PARTITION_FAMILIES]
    topic_size = f.declare("iggy_topic_size_bytes", "gauge", "Bytes of the topic's segments "
                                                             "(disk used by its messages).")
    groups = 0
    for stream in state.streams.values():
        s = _label(stream.name)
        for topic in stream.topics.values():
            t = f'stream="{s}",topic="{_label(topic.name)}"'
            size = 0
            groups += len(topic.extra.get("groups", {}))
            for part in topic.partitions.values():
                log = part.log
                labels = f'{{{t},partition="{part.id}"}}'
                part_size = log.size_bytes
                size += part_size
                values = (log.appended_messages, log.appended, part.polled_messages,
                          part.polled_bytes, log.messages_count, part_size,
                          len(log.segments), log.current_offset)
                for (name, _, _), lines, value in zip(_PARTITION_FAMILIES, part_lines, values):
                    lines.append(f"{name}{labels} {value}")
            topic_size.append(f"iggy_topic_size_bytes{{{t}}} {size}")

    members = f.declare("iggy_consumer_group_members", "gauge", "Members of the consumer group.")
    f.one("iggy_consumer_groups", "gauge", "Consumer groups.", groups)
    for stream in state.streams.values():
        for topic in stream.topics.values():
            for group in topic.extra.get("groups", {}).values():
                members.append(f'iggy_consumer_group_members{{stream="{_label(stream.name)}",'
                               f'topic="{_label(topic.name)}",group="{_label(group.name)}"}} '
                               f'{len(group.members)}')
    lag_lines = {kind: [f.declare(*family) for family in families]
                 for kind, families in _LAG_FAMILIES.items()}
    for topic, part, kind, _, name, committed, behind, seconds in consumer_lags(state):
        who = "group" if kind == GROUP else "consumer"
        labels = (f'{{stream="{_label(topic.stream.name)}",topic="{_label(topic.name)}",'
                  f'{who}="{_label(name)}",partition="{part.id}"}}')
        (committed_lines, lag_messages, lag_seconds), families = lag_lines[kind], \
            _LAG_FAMILIES[kind]
        if committed is not None:
            committed_lines.append(f"{families[0][0]}{labels} {committed}")
        lag_messages.append(f"{families[1][0]}{labels} {behind}")
        lag_seconds.append(f"{families[2][0]}{labels} {seconds}")

    by_transport: dict[str, int] = {}
    for client in server.clients.values():
        by_transport[client.transport] = by_transport.get(client.transport, 0) + 1
    open_lines = f.declare("iggy_connections", "gauge", "Client connections open, by transport.")
    for transport, n in sorted(by_transport.items()):
        open_lines.append(f'iggy_connections{{transport="{transport.lower()}"}} {n}')
    accepted = f.declare("iggy_connections_total", "counter",
                         "Client connections accepted since start, by transport.")
    for transport, n in sorted(metrics.accepted.items()):
        accepted.append(f'iggy_connections_total{{transport="{transport.lower()}"}} {n}')
    f.one("iggy_clients", "gauge", "Connected clients.", len(server.clients))
    _requests(f, metrics.requests)

    proc = process_figures()
    f.one("process_cpu_seconds_total", "counter", "User and system CPU time of the server "
                                                  "process.", proc["cpu_seconds"])
    f.one("process_resident_memory_bytes", "gauge", "Resident memory.", proc["resident_memory"])
    f.one("process_virtual_memory_bytes", "gauge", "Virtual memory.", proc["virtual_memory"])
    f.one("process_open_fds", "gauge", "Open file descriptors.", proc["open_fds"])
    f.one("process_max_fds", "gauge", "The open file descriptors limit.", proc["max_fds"])
    f.one("process_threads", "gauge", "Threads of the server process.", proc["threads"])
    f.one("process_start_time_seconds", "gauge", "Start time of the server, seconds since the "
                                                 "epoch.", server.started_at / 1e6)
    disk = shutil.disk_usage(server.data_dir)
    f.one("iggy_disk_free_bytes", "gauge", "Free space of the data directory's filesystem.",
          disk.free)
    f.one("iggy_disk_total_bytes", "gauge", "Size of the data directory's filesystem.",
          disk.total)
    return f.render()


def _requests(f: _Families, requests: dict) -> None:
    total = f.declare("iggy_requests_total", "counter", "Requests answered, by transport and "
                                                        "command.")
    errors = f.declare("iggy_request_errors_total", "counter", "Requests answered with an "
                                                               "error, by transport and command.")
    by_command: dict[str, list[int]] = {}
    for (transport, code), record in sorted(requests.items()):
        command = command_name(code)
        labels = f'{{transport="{transport.lower()}",command="{command}"}}'
        total.append(f"iggy_requests_total{labels} {record[COUNT]}")
        errors.append(f"iggy_request_errors_total{labels} {record[ERRORS]}")
        merged = by_command.setdefault(command, [0] * len(record))
        for i, v in enumerate(record):
            merged[i] += v
    name = "iggy_request_duration_seconds"
    hist = f.declare(name, "histogram", "Time from a request's arrival to its reply being "
                                        "ready, by command.")
    for command, record in sorted(by_command.items()):
        cumulative = 0
        for k in range(BUCKETS):
            cumulative += record[SLOT0 + k]
            hist.append(f'{name}_bucket{{command="{command}",le="{(1 << k) / 1e6:g}"}} '
                        f'{cumulative}')
        hist.append(f'{name}_bucket{{command="{command}",le="+Inf"}} {record[COUNT]}')
        hist.append(f'{name}_sum{{command="{command}"}} {record[SUM_US] / 1e6}')
        hist.append(f'{name}_count{{command="{command}"}} {record[COUNT]}')


# -- the JSON rates document (GET /stats/rates) -------------------------------------------

def _rate_fields(rates: dict) -> dict:
    return {window: {"messages_in": r[0], "bytes_in": r[1], "messages_out": r[2],
                     "bytes_out": r[3]} for window, r in rates.items()}


def rates_document(server, now: int) -> dict:
    """Per topic and partition: totals and rates over the last 1, 10 and 60 s; per consumer
    group (and individual consumer) and partition: committed offset, high watermark, lag."""
    metrics = server.metrics
    topics = []
    for stream in server.state.streams.values():
        for topic in stream.topics.values():
            parts, sums = [], [0, 0, 0, 0]
            topic_rates = {f"{w}s": [0.0, 0.0, 0.0, 0.0] for w in WINDOWS}
            for part in topic.partitions.values():
                log = part.log
                rates = metrics.rates(part)
                totals = (log.appended_messages, log.appended, part.polled_messages,
                          part.polled_bytes)
                for i, v in enumerate(totals):
                    sums[i] += v
                for window, r in rates.items():
                    acc = topic_rates[window]
                    for i, v in enumerate(r):
                        acc[i] += v
                parts.append({"partition_id": part.id, "messages": log.messages_count,
                              "size_bytes": log.size_bytes, "segments": len(log.segments),
                              "high_watermark": log.current_offset, **_totals(totals),
                              "rates": _rate_fields(rates)})
            topics.append({"stream_id": stream.id, "stream": stream.name,
                           "topic_id": topic.id, "topic": topic.name,
                           "messages": sum(p["messages"] for p in parts),
                           "size_bytes": sum(p["size_bytes"] for p in parts),
                           **_totals(sums), "rates": _rate_fields(topic_rates),
                           "partitions": parts})
    groups: dict[tuple, dict] = {}
    consumers = []
    for topic, part, kind, ident, name, committed, behind, seconds in \
            consumer_lags(server.state):
        entry = {"partition_id": part.id, "committed_offset": committed,
                 "high_watermark": part.log.current_offset, "lag": behind,
                 "lag_seconds": seconds}
        where = {"stream_id": topic.stream.id, "stream": topic.stream.name,
                 "topic_id": topic.id, "topic": topic.name}
        if kind == CONSUMER:
            consumers.append({**where, "consumer_id": ident, **entry})
            continue
        group = groups.get((topic.identity, ident))
        if group is None:
            members = topic.extra["groups"][ident].members
            group = groups[(topic.identity, ident)] = {
                **where, "group_id": ident, "group": name, "members": len(members),
                "lag": 0, "lag_seconds": 0.0, "partitions": []}
        group["lag"] += behind
        group["lag_seconds"] = max(group["lag_seconds"], seconds)
        group["partitions"].append(entry)
    return {"timestamp": now, "windows": [f"{w}s" for w in WINDOWS],
            "collecting": metrics.enabled, "topics": topics,
            "consumer_groups": list(groups.values()), "consumers": consumers}


def _totals(values) -> dict:
    return dict(zip(("messages_sent_total", "bytes_sent_total", "messages_polled_total",
                     "bytes_polled_total"), values))
