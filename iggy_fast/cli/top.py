"""`iggy-fast top`: a live terminal table of a server's topics, for operators without a browser.

Every `--interval` seconds (1 by default) it takes a snapshot over the SDK client: GetStats,
the streams and each stream's topics, and for every topic its consumer groups with the
group's stored offset per partition. Rates (messages and bytes per second, in) are the
difference between two successive snapshots over the time between them, computed here until
the server reports its own; the first snapshot has none. A group's lag on a partition is the
partition's last offset minus the group's stored offset (every message, when it has stored
none); a topic's line shows each group's total.

A stream or topic deleted while it is watched leaves the table at the next snapshot (a "not
found" answer for one topic drops that topic, not the view). `--once` prints one table and
exits, `--iterations N` stops after N snapshots (both for scripts and tests), `--stream S`
watches only that stream; `--output json` prints each snapshot as one line of JSON. On a
terminal it redraws in place (rich's Live).

When the server goes away, top says so in place of the table (`{"error": ...}` in JSON) and
keeps trying every interval; the SDK client reconnects and logs in again, and the table comes
back when the server does. The exit code is 1 when the last snapshot failed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from iggy_fast.cli.admin import ident
from iggy_fast.cli.connect import connection_options, remote
from iggy_fast.cli.output import duration, size
from iggy_fast.protocol.errors import IggyError


async def _gather_present(calls):
    """Run the calls together; a call the server answers with an Iggy error (a topic deleted
    meanwhile) gives None instead of failing the snapshot."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    out = []
    for r in results:
        if isinstance(r, IggyError):
            out.append(None)
        elif isinstance(r, BaseException):
            raise r
        else:
            out.append(r)
    return out


async def _group_lag(client, stream_id: int, topic_id: int, group, partitions) -> dict:
    """{name, id, members, lag, partitions: {"id": lag}} for one group of a topic (string
    keys: the snapshot is JSON)."""
    from iggy_fast.client.types import Consumer
    offsets = await _gather_present(
        [client.get_consumer_offset(stream_id, topic_id, p.id, Consumer.group(group.id))
         for p in partitions])
    lags = {}
    for p, stored in zip(partitions, offsets):
        if p.messages_count == 0:
            lags[str(p.id)] = 0
        elif stored is None:
            lags[str(p.id)] = p.current_offset + 1          # nothing consumed yet
        else:
            lags[str(p.id)] = max(p.current_offset - stored.stored_offset, 0)
    return {"id": group.id, "name": group.name, "members": group.members_count,
            "lag": sum(lags.values()), "partitions": lags}


async def snapshot(client, only=()) -> dict:
    """One look at the server: {time, stats, topics: [...]} (see the module docstring);
    `only`: the streams to watch, by id or name (default all)."""
    stats = await client.get_stats()
    streams = await client.get_streams()
    if only:
        streams = [s for s in streams if s.id in only or s.name in only]
    topic_lists = await _gather_present([client.get_topics(s.id) for s in streams])
    topics = [(s, t) for s, ts in zip(streams, topic_lists) for t in (ts or ())]
    group_lists = await _gather_present(
        [client.get_consumer_groups(s.id, t.id) for s, t in topics])
    grouped = [(s, t, gs) for (s, t), gs in zip(topics, group_lists) if gs]
    details = await _gather_present([client.get_topic(s.id, t.id) for s, t, _ in grouped])
    lag_calls, owners = [], []
    for (s, t, groups), detail in zip(grouped, details):
        for g in groups if detail else ():
            lag_calls.append(_group_lag(client, s.id, t.id, g, detail.partitions))
            owners.append((s.id, t.id))
    lags: dict = {}
    for owner, lag in zip(owners, await asyncio.gather(*lag_calls)):
        lags.setdefault(owner, []).append(lag)
    rows = [{"stream_id": s.id, "stream": s.name, "topic_id": t.id, "topic": t.name,
             "partitions": t.partitions_count, "messages": t.messages_count,
             "size_bytes": t.size_bytes, "groups": lags.get((s.id, t.id), [])}
            for s, t, gs in ((s, t, gs) for (s, t), gs in zip(topics, group_lists))
            if gs is not None]
    return {"time": time.time(), "monotonic": time.monotonic(),
            "stats": {"server_version": stats.server_version, "run_time": stats.run_time,
                      "clients_count": stats.clients_count,
                      "memory_usage": stats.memory_usage, "cpu_usage": stats.cpu_usage,
                      "messages_count": stats.messages_count,
                      "messages_size_bytes": stats.messages_size_bytes,
                      "streams_count": stats.streams_count, "topics_count": stats.topics_count,
                      "partitions_count": stats.partitions_count},
            "topics": rows}


def with_rates(current: dict, previous: dict | None) -> dict:
    """Add each topic's `messages_per_second` and `bytes_per_second` since `previous` (None
    for the first snapshot, and for a topic that was not in the previous one)."""
    before = {}
    elapsed = 0.0
    if previous is not None:
        elapsed = current["monotonic"] - previous["monotonic"]
        before = {(r["stream_id"], r["topic_id"]): r for r in previous["topics"]}
    for row in current["topics"]:
        prev = before.get((row["stream_id"], row["topic_id"]))
        if prev is None or elapsed <= 0:
            row["messages_per_second"] = row["bytes_per_second"] = None
        else:
            # A purge makes the counts fall: that is not a negative rate.
            row["messages_per_second"] = max(row["messages"] - prev["messages"], 0) / elapsed
            row["bytes_per_second"] = max(row["size_bytes"] - prev["size_bytes"], 0) / elapsed
    return current


def render(snap: dict, address: str):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    st = snap["stats"]
    head = Text.assemble(
        ("iggy-fast top ", "bold"), f"{address}  server {st['server_version']}  up ",
        duration(st["run_time"]), f"  clients {st['clients_count']}  memory ",
        size(st["memory_usage"]), f"  cpu {st['cpu_usage']:.1f}%  ",
        f"{st['streams_count']} streams, {st['topics_count']} topics, "
        f"{st['partitions_count']} partitions, {st['messages_count']} messages, ",
        size(st["messages_size_bytes"]))
    table = Table(expand=True)
    for name, justify in (("stream", "left"), ("topic", "left"), ("partitions", "right"),
                          ("messages", "right"), ("size", "right"), ("msg/s", "right"),
                          ("bytes/s", "right"), ("lag by group", "left")):
        table.add_column(name, justify=justify)
    for r in snap["topics"]:
        rate = r["messages_per_second"]
        table.add_row(
            r["stream"], r["topic"], str(r["partitions"]), f"{r['messages']:,}",
            size(r["size_bytes"]), "" if rate is None else f"{rate:,.1f}",
            "" if rate is None else size(r["bytes_per_second"]) + "/s",
            ", ".join(f"{g['name']}: {g['lag']:,}" for g in r["groups"]))
    if not snap["topics"]:
        table.add_row("(no topics)", *[""] * 7)
    return Group(head, table)


@remote(reconnect=True)
async def top(client, args) -> int:
    import orjson
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    iterations = 1 if args.once else args.iterations
    as_json = getattr(args, "output", "table") == "json"
    console = Console()
    live = None
    if not as_json and iterations is None and console.is_terminal:
        live = Live(console=console, auto_refresh=False, screen=False)
        live.start()
    # The client's reconnection warnings would tear the live table: its own line says it.
    logging.getLogger("iggy_fast.client").setLevel(logging.ERROR)
    previous, n, failed = None, 0, False
    try:
        while iterations is None or n < iterations:
            started = time.monotonic()
            n += 1
            try:
                snap = with_rates(await snapshot(client, args.stream), previous)
                failed = False
            except (IggyError, OSError) as e:
                # The server went away or refused: say so and try again at the next tick
                # (the client reconnects meanwhile); rates restart from the next snapshot.
                snap, previous, failed = None, None, True
                problem = f"{client.config.addresses[0]}: {e}"
            if as_json:
                out = ({k: v for k, v in snap.items() if k != "monotonic"} if snap else
                       {"time": time.time(), "error": problem})
                sys.stdout.buffer.write(orjson.dumps(out) + b"\n")
                sys.stdout.flush()
            else:
                shown = render(snap, client.address) if snap else Text(
                    f"iggy-fast top: {problem}; retrying every {args.interval:g} s",
                    style="bold red")
                if live is not None:
                    live.update(shown, refresh=True)
                else:
                    console.print(shown)
            if snap:
                previous = snap
            if iterations is not None and n >= iterations:
                break
            await asyncio.sleep(max(args.interval - (time.monotonic() - started), 0))
    finally:
        if live is not None:
            live.stop()
    return 1 if failed else 0


def add_parser(sub) -> None:
    p = sub.add_parser("top", parents=[connection_options()],
                       help="a live table of topics: messages, sizes, rates, consumer lag")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between snapshots")
    p.add_argument("--once", action="store_true", help="one snapshot, then exit")
    p.add_argument("--iterations", type=int, help="stop after this many snapshots")
    p.add_argument("--stream", action="append", type=ident, default=[], metavar="STREAM",
                   help="watch only this stream (id or name), repeatable")
    p.set_defaults(func=_top)


def _top(args) -> int:
    # A request waits for a reconnection at most this long: a little over a tick, so a
    # server that is down shows as down within seconds rather than the CLI's 10.
    if getattr(args, "timeout", None) is None:
        args.timeout = max(2 * args.interval, 2.0)
    return top(args)
