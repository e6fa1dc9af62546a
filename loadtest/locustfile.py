"""Load-test an Iggy server with locust: users that produce and users that consume.

    pip install '.[loadtest]'
    locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 30s \\
        --host iggy://iggy:iggy@127.0.0.1:8090

Every request is reported to locust (name, response time, bytes, exception), so its statistics,
charts and CSVs (`--csv PREFIX`) show sends and polls side by side. Each user has a connection
of its own through the blocking client (`BlockingClient`: plain sockets, which gevent, under
locust, schedules cooperatively; the typed `SyncIggyClient` runs an asyncio loop on a thread of
its own, which gevent cannot). `ProducerUser` sends batches of
`--message-size`-byte messages, `--batch-size` per send, round-robin over the partitions;
`ConsumerUser` polls the partitions in turn from the start, `--batch-size` messages per poll,
as a consumer of its own. The stream and topic (`--stream`, `--topic`, `--partitions`) are
created when the test starts if they do not exist.

Settings come from locust options or the environment (IGGY_MESSAGE_SIZE, IGGY_BATCH_SIZE,
IGGY_STREAM, IGGY_TOPIC, IGGY_PARTITIONS, IGGY_TRANSPORT); the address and credentials from
`--host` (a connection string, `iggy://user:password@host:port`, or a token in place of
user:password), with `?tls=true&tls_ca_file=...&tls_domain=...` for TLS. The blocking client
speaks TCP (and TLS over it): `--transport` accepts tcp, and names any other transport in a
clear error rather than measuring something else. Choose the mix with locust's user classes (`ProducerUser ConsumerUser` on
the command line) or `--producer-weight` / `--consumer-weight`.
"""

from __future__ import annotations

import itertools
import os
import time

from locust import User, between, events, task

from iggy_fast import _wire
from iggy_fast.client import BlockingClient
from iggy_fast.client.connection_string import parse
from iggy_fast.protocol import client_codec as codec
from iggy_fast.protocol.errors import (FeatureUnavailable, StreamNameAlreadyExists,
                                       TopicNameAlreadyExists)

TRANSPORTS = ("tcp", "quic", "http", "ws")
OFFSET = 1


@events.init_command_line_parser.add_listener
def _options(parser):
    env = os.environ.get
    group = parser.add_argument_group("iggy")
    group.add_argument("--message-size", type=int, default=int(env("IGGY_MESSAGE_SIZE", 1000)),
                       help="payload bytes per message (env IGGY_MESSAGE_SIZE)")
    group.add_argument("--batch-size", type=int, default=int(env("IGGY_BATCH_SIZE", 100)),
                       help="messages per send and per poll (env IGGY_BATCH_SIZE)")
    group.add_argument("--stream", default=env("IGGY_STREAM", "locust"),
                       help="stream name (env IGGY_STREAM)")
    group.add_argument("--topic", default=env("IGGY_TOPIC", "load"),
                       help="topic name (env IGGY_TOPIC)")
    group.add_argument("--partitions", type=int, default=int(env("IGGY_PARTITIONS", 4)),
                       help="partitions of the topic if it is created (env IGGY_PARTITIONS)")
    group.add_argument("--transport", default=env("IGGY_TRANSPORT", ""),
                       choices=["", *TRANSPORTS],
                       help="the transport; the blocking client speaks tcp (TLS with "
                            "?tls=true in --host) (env IGGY_TRANSPORT)")
    group.add_argument("--producer-weight", type=int, default=int(env("IGGY_PRODUCERS", 1)))
    group.add_argument("--consumer-weight", type=int, default=int(env("IGGY_CONSUMERS", 1)))


def connect(environment) -> BlockingClient:
    """A logged-in blocking client for the connection string in --host."""
    host = environment.host or os.environ.get("IGGY_URL", "iggy://iggy:iggy@127.0.0.1:8090")
    config = parse(host)
    transport = environment.parsed_options.transport or config.transport
    if transport != "tcp":
        raise FeatureUnavailable(f"locust users speak TCP (or TLS over TCP) through the "
                                 f"blocking client, not {transport!r}")
    client = BlockingClient(config.addresses[0], timeout=config.timeout, tls=config.tls,
                            tls_ca_file=config.tls_ca_file,
                            tls_domain=config.tls_domain or "localhost")
    if config.token is not None:
        client.login_with_token(config.token)
    else:
        client.login(config.username, config.password)
    return client


@events.test_start.add_listener
def _setup(environment, **_):
    """Create the stream and topic once, before any user starts."""
    options = environment.parsed_options
    with connect(environment) as client:
        try:
            client.call(202, codec.create_stream(options.stream))
        except StreamNameAlreadyExists:
            pass
        try:
            client.call(302, codec.create_topic(options.stream, options.topic,
                                                options.partitions))
        except TopicNameAlreadyExists:
            pass


@events.init.add_listener
def _weights(environment, **_):
    options = environment.parsed_options
    if options is not None:
        ProducerUser.weight = options.producer_weight
        ConsumerUser.weight = options.consumer_weight


class IggyUser(User):
    """A locust user with a connection of its own, reporting each request to locust."""

    abstract = True
    wait_time = between(0, 0.01)
    _ids = itertools.count(1)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.options = options
        self.number = next(IggyUser._ids)
        self.client = connect(self.environment)
        topic = codec.read_topic(self.client.call(300, codec.topic_ref(options.stream,
                                                                       options.topic)).body)
        self.partitions = topic.partitions_count

    def on_stop(self) -> None:
        self.client.close()

    def measure(self, request_type: str, name: str, call):
        """Run `call()`; report it to locust; `call` returns the bytes it moved."""
        started = time.perf_counter()
        length, exception = 0, None
        try:
            length = call()
        except Exception as e:          # reported to locust, which counts it as a failure
            exception = e
        self.environment.events.request.fire(
            request_type=request_type, name=name, context={},
            response_time=(time.perf_counter() - started) * 1000, response_length=length,
            exception=exception)


class ProducerUser(IggyUser):
    def on_start(self) -> None:
        super().on_start()
        size, count = self.options.message_size, self.options.batch_size
        self.payloads = [os.urandom(size)] * count
        self.name = f"send {count} x {size} B"
        self.next_partition = self.number

    @task
    def send(self) -> None:
        partition = self.next_partition % self.partitions
        self.next_partition += 1
        count = len(self.payloads)

        def call():
            batch = _wire.encode_batch(self.payloads, time.time_ns() // 1000, None,
                                       os.urandom(16 * count))
            self.client.send_batch(self.options.stream, self.options.topic, partition, batch,
                                   count)
            return len(batch)
        self.measure("iggy", self.name, call)


class ConsumerUser(IggyUser):
    def on_start(self) -> None:
        super().on_start()
        self.positions = [0] * self.partitions
        self.turn = 0
        self.name = f"poll {self.options.batch_size}"

    @task
    def poll(self) -> None:
        partition = self.turn % self.partitions
        self.turn += 1

        def call():
            reply = self.client.poll(self.options.stream, self.options.topic, partition,
                                     OFFSET, self.positions[partition],
                                     self.options.batch_size, consumer_id=1000 + self.number)
            self.positions[partition] += _wire.poll_summary(reply.body)[2]
            return len(reply.body)
        self.measure("iggy", self.name, call)
