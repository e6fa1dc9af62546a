"""Server metrics (server/metrics.py) on a live server driven by the official SDK: the counts
sent and polled, per-partition rates, consumer-group and consumer lag, request counts, errors
and latency histograms, GetStats, and the Prometheus text being well formed.

The server runs in this test's event loop (`app.serve`, TCP on a free port, the same code the
`iggy-fast server` command runs), so the renderers are called on the live server object: this
checks the numbers where they are made, apart from any transport. tests/test_metrics_http.py
scrapes the same documents over HTTP from a server subprocess.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from apache_iggy import Consumer, IggyClient, PollingStrategy
from apache_iggy import SendMessage as Message

from iggy_fast.config import load_config
from iggy_fast.server import app, metrics
from iggy_fast.testing import free_port

PAYLOAD = b"m" * 100
# name{labels} value, or a comment line (the text exposition format, version 0.0.4).
SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})?'
                    r' [-+0-9.eE]+(Inf)?$|^# (HELP|TYPE) .+$')


class Live:
    """A server in this event loop and an SDK client logged in as root."""

    def __init__(self, tmp_path, **overrides):
        self.port = free_port()
        self.cfg = load_config(environ={}, overrides={
            "system": {"path": str(tmp_path / "data")},
            "tcp": {"address": f"127.0.0.1:{self.port}"},
            "quic": {"enabled": False}, "http": {"enabled": False, **overrides},
            "websocket": {"enabled": False}, "root": {"username": "iggy", "password": "iggy"}})

    async def __aenter__(self):
        ready = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(app.serve(self.cfg, ready=ready.set_result))
        self.server = await asyncio.wait_for(ready, 20)
        self.client = await self.connect()
        return self

    async def connect(self) -> IggyClient:
        client = IggyClient(f"127.0.0.1:{self.port}")
        await client.connect()
        await client.login_user("iggy", "iggy")
        return client

    async def __aexit__(self, *exc):
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task

    def scrape(self) -> dict[str, float]:
        """The Prometheus text as {"name{labels}": value}, each line checked for its form."""
        text = metrics.prometheus(self.server)
        samples = {}
        for line in text.splitlines():
            assert SAMPLE.match(line), line
            if not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples


async def send(client, stream, topic, partition: int, batches: int, per_batch: int = 100):
    for _ in range(batches):
        await client.send_messages(stream, topic, partition,
                                   [Message(PAYLOAD) for _ in range(per_batch)])


async def consume(client, consumer, n: int) -> None:
    """Poll `n` messages of s/t partition 0 from the consumer's next offset, committing."""
    got = 0
    while got < n:
        got += len(await client.poll_messages(
            stream="s", topic="t", partition_id=0, consumer=consumer,
            polling_strategy=PollingStrategy.Next(), count=n - got, auto_commit=True))
    assert got == n


async def test_counts_sent_and_polled_per_partition(tmp_path):
    async with Live(tmp_path) as live:
        c = live.client
        await c.create_stream("s")
        await c.create_topic(stream="s", name="t", partitions_count=3)
        await send(c, "s", "t", 0, 7)        # 700 messages to partition 0
        await send(c, "s", "t", 2, 3)        # 300 to partition 2
        polled = await c.poll_messages(stream="s", topic="t", partition_id=0,
                                       consumer=Consumer.Single(1),
                                       polling_strategy=PollingStrategy.Offset(0), count=250,
                                       auto_commit=False)
        assert len(polled) == 250
        m = live.scrape()
        p0 = 'stream="s",topic="t",partition="0"'
        p2 = 'stream="s",topic="t",partition="2"'
        assert m[f"iggy_messages_sent_total{{{p0}}}"] == 700
        assert m[f"iggy_messages_sent_total{{{p2}}}"] == 300
        assert m['iggy_messages_sent_total{stream="s",topic="t",partition="1"}'] == 0
        assert m[f"iggy_messages_polled_total{{{p0}}}"] == 250
        assert m[f"iggy_messages_polled_total{{{p2}}}"] == 0
        # Bytes are those of the stored batches: more than the payloads, the same per message.
        sent0, sent2 = m[f"iggy_bytes_sent_total{{{p0}}}"], m[f"iggy_bytes_sent_total{{{p2}}}"]
        assert sent0 > 700 * len(PAYLOAD)
        assert sent0 / 700 == pytest.approx(sent2 / 300, rel=0.01)
        assert m[f"iggy_bytes_polled_total{{{p0}}}"] == pytest.approx(sent0 * 250 / 700,
                                                                     rel=0.01)
        assert m[f"iggy_partition_messages{{{p0}}}"] == 700
        assert m[f"iggy_partition_high_watermark{{{p0}}}"] == 699
        assert m['iggy_topic_size_bytes{stream="s",topic="t"}'] == sent0 + sent2
        assert m["iggy_messages"] == 1000
        assert m['iggy_requests_total{transport="tcp",command="send_messages"}'] == 10
        assert m['iggy_requests_total{transport="tcp",command="poll_messages"}'] == 1
        assert m['iggy_connections{transport="tcp"}'] == 1
        assert m['iggy_connections_total{transport="tcp"}'] == 1
        # The latency histogram: cumulative buckets ending in the count.
        name = "iggy_request_duration_seconds"
        buckets = [v for k, v in m.items()
                   if k.startswith(f'{name}_bucket{{command="send_messages"')]
        assert buckets == sorted(buckets) and buckets[-1] == 10
        assert m[f'{name}_count{{command="send_messages"}}'] == 10
        assert 0 < m[f'{name}_sum{{command="send_messages"}}'] < 10


async def test_errors_counted_per_transport_and_command(tmp_path):
    async with Live(tmp_path) as live:
        c = live.client
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await c.create_topic(stream="missing", name="t", partitions_count=1)
        await c.create_stream("s")
        m = live.scrape()
        labels = '{transport="tcp",command="create_topic"}'
        assert m[f"iggy_requests_total{labels}"] == 3
        assert m[f"iggy_request_errors_total{labels}"] == 3
        assert m['iggy_request_errors_total{transport="tcp",command="create_stream"}'] == 0


async def test_lag_of_a_group_and_a_consumer(tmp_path):
    """Produce 1000, consume 400 and commit: a lag of 600, in GetStats' totals, in the rates
    document and in /metrics."""
    async with Live(tmp_path) as live:
        c = live.client
        await c.create_stream("s")
        await c.create_topic(stream="s", name="t", partitions_count=1)
        await c.create_consumer_group("s", "t", "readers")
        await send(c, "s", "t", 0, 5)
        await asyncio.sleep(0.05)              # the newest batch is measurably newer
        await send(c, "s", "t", 0, 5)
        reader = await live.connect()
        await reader.join_consumer_group("s", "t", "readers")
        await consume(reader, Consumer.Group("readers"), 400)
        await consume(c, Consumer.Single(7), 400)

        stats = await c.get_stats()
        assert (stats.messages_count, stats.consumer_groups_count) == (1000, 1)

        doc = metrics.rates_document(live.server, 0)
        group, = doc["consumer_groups"]
        assert (group["group"], group["members"], group["lag"]) == ("readers", 1, 600)
        part, = group["partitions"]
        assert (part["committed_offset"], part["high_watermark"], part["lag"]) == (399, 999, 600)
        assert part["lag_seconds"] >= 0.05      # batch 400 is older than the newest
        consumer, = doc["consumers"]
        assert (consumer["consumer_id"], consumer["lag"]) == (7, 600)

        m = live.scrape()
        g = 'stream="s",topic="t",group="readers",partition="0"'
        assert m[f"iggy_consumer_group_committed_offset{{{g}}}"] == 399
        assert m[f"iggy_consumer_group_lag_messages{{{g}}}"] == 600
        assert m[f"iggy_consumer_group_lag_seconds{{{g}}}"] >= 0.05
        assert m['iggy_consumer_group_members{stream="s",topic="t",group="readers"}'] == 1
        assert m['iggy_consumer_lag_messages{stream="s",topic="t",consumer="7",'
                 'partition="0"}'] == 600

        # Caught up: no lag, in messages or in seconds.
        await consume(c, Consumer.Single(7), 600)
        consumer, = metrics.rates_document(live.server, 0)["consumers"]
        assert (consumer["lag"], consumer["lag_seconds"]) == (0, 0.0)


async def test_group_without_commit_lags_by_every_stored_message(tmp_path):
    async with Live(tmp_path) as live:
        c = live.client
        await c.create_stream("s")
        await c.create_topic(stream="s", name="t", partitions_count=2)
        await c.create_consumer_group("s", "t", "idle")
        await send(c, "s", "t", 1, 2)
        group, = metrics.rates_document(live.server, 0)["consumer_groups"]
        assert group["lag"] == 200
        assert [(p["partition_id"], p["committed_offset"], p["lag"])
                for p in group["partitions"]] == [(0, None, 0), (1, None, 200)]


async def test_rates_follow_a_producer(tmp_path):
    async with Live(tmp_path) as live:
        c = live.client
        await c.create_stream("s")
        await c.create_topic(stream="s", name="t", partitions_count=1)
        await asyncio.sleep(1.2)               # a first tick before anything is sent
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        while loop.time() - start < 3.5:       # three ticks or more while producing
            await send(c, "s", "t", 0, 1)
            sent += 100
            await asyncio.sleep(0.01)
        topic, = metrics.rates_document(live.server, 0)["topics"]
        # The 10 s window spans every tick since the first: at most what was sent over the
        # time the ticks span (>= 2 s), so well above zero and below sent / 2 s.
        ten = topic["rates"]["10s"]["messages_in"]
        assert 0 < ten <= sent / 2
        assert topic["rates"]["1s"]["messages_in"] > 0
        assert topic["rates"]["10s"]["messages_out"] == 0
        assert topic["partitions"][0]["rates"]["10s"]["messages_in"] == ten
        for _ in range(12):                    # idle: the 1 s rate falls to zero
            await asyncio.sleep(0.25)
            if metrics.rates_document(live.server, 0)["topics"][0]["rates"]["1s"][
                    "messages_in"] == 0:
                break
        else:
            pytest.fail("the 1 s rate stayed above zero with nothing sent")


async def test_get_stats_from_the_same_numbers(tmp_path):
    async with Live(tmp_path) as live:
        c = live.client
        await c.create_stream("s")
        await c.create_topic(stream="s", name="t", partitions_count=2)
        await send(c, "s", "t", 0, 4)
        await asyncio.sleep(2.2)               # two ticks: CPU over the last second
        stats = await c.get_stats()
        m = live.scrape()
        assert stats.messages_count == m["iggy_messages"] == 400
        assert stats.partitions_count == m["iggy_partitions"] == 2
        assert stats.segments_count == m["iggy_segments"]
        assert int(stats.messages_size_bytes) == m["iggy_stored_bytes"]
        assert stats.clients_count == m["iggy_clients"] == 1
        # The process's threads (the event loop and at least the durability worker), not
        # the machine's cores; CPU percentages within their ranges.
        assert stats.threads_count == m["process_threads"] >= 2
        assert 0 <= stats.cpu_usage <= 100 * 64
        assert 0 <= stats.total_cpu_usage <= 100


async def test_collection_off(tmp_path):
    """`[http.metrics] enabled = false`: no request accounting and no rates, while the
    per-partition totals and GetStats still answer."""
    async with Live(tmp_path, metrics={"enabled": False}) as live:
        c = live.client
        await c.create_stream("s")
        await c.create_topic(stream="s", name="t", partitions_count=1)
        await send(c, "s", "t", 0, 2)
        assert live.server.metrics.requests == {}
        assert live.server.dispatcher.metrics is None
        m = live.scrape()
        assert m['iggy_messages_sent_total{stream="s",topic="t",partition="0"}'] == 200
        assert not any(k.startswith("iggy_requests_total{") for k in m)
        doc = metrics.rates_document(live.server, 0)
        assert doc["collecting"] is False
        assert (await c.get_stats()).messages_count == 200


async def test_label_values_escaped(tmp_path):
    async with Live(tmp_path) as live:
        c = live.client
        await c.create_stream('a "quoted" \\ name')
        await c.create_topic(stream='a "quoted" \\ name', name="t", partitions_count=1)
        m = live.scrape()          # every line matched the exposition grammar
        assert m['iggy_partition_messages{stream="a \\"quoted\\" \\\\ name",topic="t",'
                 'partition="0"}'] == 0
