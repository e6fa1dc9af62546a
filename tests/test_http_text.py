"""The compiled readers of message JSON that skip orjson (_json.send_from_json on the server,
_json.polled_from_json in the client) against the general paths they stand in for, and the
base64 coders around them (AVX2 and scalar) against pybase64, without a server.

A reader either makes exactly what the general path makes or answers None (the general path
then reads the document, or says what is wrong with it): both directions are checked, for
random documents (hypothesis) and for the shapes each one must leave to the general path."""

from __future__ import annotations

import base64
import json

import orjson
import pybase64
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iggy_fast import _json, _wire
from iggy_fast.protocol import json as js
from iggy_fast.protocol import json_client as jc
from iggy_fast.protocol.errors import InvalidFormat

PATH = {"stream_id": "s", "topic_id": "7"}
U128 = 2**128 - 1


def general_send(raw: bytes, now: int):
    """What decode_send makes of a body through orjson (or the standard library): the
    decoder handed to decode_request is not decode_send itself, so it takes no shortcut."""
    return js.decode_request(lambda path, query, body: js.decode_send(path, query, body, now),
                             PATH, {}, raw)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


message = st.tuples(st.integers(0, U128), st.binary(max_size=200),
                    st.sampled_from(["id", "header", "both", "none"]))
partitioning = st.sampled_from([None, {"kind": "balanced"},
                                {"kind": "partition_id", "value": b64(b"\x02\0\0\0")},
                                {"kind": "messages_key", "value": b64(b"key")}])


def send_body(messages, part, spaced: bool) -> bytes:
    entries = []
    for mid, payload, form in messages:
        m = {"payload": b64(payload), "user_headers": []}
        if form in ("id", "both"):
            m["id"] = mid if form == "id" else mid ^ 1      # the header's id wins
        if form in ("header", "both"):
            m["header"] = {"id": mid, "checksum": 0, "offset": 3, "timestamp": 4,
                           "origin_timestamp": 5, "user_headers_length": 0,
                           "payload_length": len(payload), "reserved": 0}
        entries.append(m)
    doc = {"messages": entries} if part is None else {"partitioning": part,
                                                      "messages": entries}
    return json.dumps(doc, indent=1 if spaced else None).encode()


@settings(max_examples=300, deadline=None)
@given(st.lists(message, min_size=1, max_size=12), partitioning, st.booleans(),
       st.integers(0, 2**64 - 1))
def test_a_plain_send_reads_as_the_general_path_reads_it(messages, part, spaced, now):
    raw = send_body(messages, part, spaced)
    fast = js.plain_send(PATH, raw, now)
    assert fast is not None
    want = general_send(raw, now)
    assert (fast.stream, fast.topic, fast.partitioning, bytes(fast.partitioning_value),
            fast.count) == (want.stream, want.topic, want.partitioning,
                            bytes(want.partitioning_value), want.count)
    assert bytes(fast.batch) == bytes(want.batch)
    ids = [mid if form != "none" else 0 for mid, _payload, form in messages]
    assert [m[3] for m in _wire.iter_messages(fast.batch)] == ids


@pytest.mark.parametrize("raw", [
    # user headers, as entries or as a base64 block
    b'{"messages":[{"id":1,"payload":"eA==","user_headers":[{"key":{"kind":"string",'
    b'"value":"aw=="},"value":{"kind":"string","value":"dg=="}}]}]}',
    b'{"messages":[{"id":1,"payload":"eA==","user_headers":"AAAA"}]}',
    # an escape in a string, an unknown or repeated key
    b'{"messages":[{"id":1,"payload":"eA\\u003d="}]}',
    b'{"messages":[{"id":1,"payload":"eA==","note":1}]}',
    b'{"messages":[{"id":1,"id":2,"payload":"eA=="}]}',
    b'{"partitioning":{"kind":"balanced"},"partitioning":{"kind":"balanced"},'
    b'"messages":[{"payload":"eA=="}]}',
    # numbers that are not a u128, base64 that is not, no message, trailing bytes
    b'{"messages":[{"id":1.0,"payload":"eA=="}]}',
    b'{"messages":[{"id":-1,"payload":"eA=="}]}',
    b'{"messages":[{"id":01,"payload":"eA=="}]}',
    b'{"messages":[{"id":%d,"payload":"eA=="}]}' % (U128 + 1),
    b'{"messages":[{"id":1,"payload":"eA="}]}',
    b'{"messages":[{"id":1,"payload":"' + b"QUJD" * 20 + b'*A=="}]}',
    b'{"messages":[]}', b'{"messages":[{"id":1}]}', b'{"messages":[{"payload":"eA=="}]} x',
    b'{"partitioning":{"value":"AQAAAA=="},"messages":[{"payload":"eA=="}]}',
    b'{"partitioning":{"kind":"sideways"},"messages":[{"payload":"eA=="}]}',
    b'', b'[]', b'{"messages":[{"payload":"eA=="}]',
])
def test_any_other_send_is_left_to_the_general_path(raw):
    assert js.plain_send(PATH, raw, 1) is None
    try:
        want = general_send(raw, 1)
    except InvalidFormat as e:             # the general path says what is wrong
        with pytest.raises(InvalidFormat, match=str(e).split(":")[0]):
            js.decode_request(js.decode_send, PATH, {}, raw)
    else:
        got = js.decode_request(js.decode_send, PATH, {}, raw)
        assert bytes(got.batch[256:]) == bytes(want.batch[256:])    # the messages


polled_message = st.tuples(st.integers(0, U128), st.binary(min_size=1, max_size=120),
                           st.integers(0, 2**32 - 1))
stored_batch = st.tuples(st.lists(polled_message, min_size=1, max_size=6),
                         st.integers(0, 2**60), st.integers(0, 2**60))


def stored(batches, partition_id: int) -> list[bytes]:
    """Batches as a partition holds them: stamped with offsets and a server timestamp."""
    chunks, offset = [], 5
    for messages, origin, timestamp in batches:
        made = _wire.build_batch([(mid, p, b"", delta) for mid, p, delta in messages], origin)
        _wire.stamp_batch(made, partition_id, offset, timestamp)
        offset += len(messages)
        chunks.append(bytes(made))
    return chunks


@settings(max_examples=300, deadline=None)
@given(st.lists(stored_batch, max_size=4), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_a_plain_poll_reply_reads_as_the_general_path_reads_it(batches, partition_id, current):
    raw = bytes(_json.polled_json(partition_id, current, stored(batches, partition_id)))
    fast = _json.polled_from_json(raw)
    assert fast is not None
    assert bytes(fast) == bytes(jc.parsed_polled_payload(raw))
    messages = _wire.iter_messages(memoryview(fast)[16:])
    assert [(m[3], m[4]) for m in messages] == [
        (mid, p) for ms, _origin, _ts in batches for mid, p, _delta in ms]
    # Every batch made carries the batch checksum of what it is.
    pos = 16
    while pos < len(fast):
        length = int.from_bytes(fast[pos + 32:pos + 40], "little")
        made = fast[pos:pos + length]
        assert int.from_bytes(made[40:48], "little") == _wire.batch_checksum(made)
        pos += length


def test_a_poll_reply_with_user_headers_or_another_layout_goes_the_general_way():
    chunk = bytearray(_wire.build_batch([(1, b"x", b"\x02\x01\0\0\0k\x02\x01\0\0\0v", 0)], 9))
    _wire.stamp_batch(chunk, 0, 0, 10)
    with_headers = bytes(_json.polled_json(0, 0, [bytes(chunk)]))
    assert _json.polled_from_json(with_headers) is None
    assert jc.polled_payload(with_headers) == jc.parsed_polled_payload(with_headers)
    doc = json.loads(bytes(_json.polled_json(3, 4, stored([([(2**100, b"abc", 0)], 1, 2)], 3))))
    doc["messages"][0]["extra"] = True                   # a field this reader does not know
    raw = json.dumps(doc).encode()
    assert _json.polled_from_json(raw) is None
    assert [m[3] for m in _wire.iter_messages(jc.polled_payload(raw)[16:])] == [2**100]


@pytest.mark.parametrize("size", [*range(0, 130), 1000, 4095, 4096, 65_537])
def test_base64_both_ways_at_every_length_around_the_vector_steps(size):
    payload = bytes((i * 7 + size) % 256 for i in range(size))
    batch = _wire.build_batch([(1, payload, b"", 0)], 1)
    body = bytes(_json.send_json(b'{"kind":"balanced"}', batch))
    assert orjson.loads(body)["messages"][0]["payload"] == pybase64.b64encode_as_string(payload)
    found = _json.send_from_json(body, 1)
    assert found is not None and bytes(found[2]) == bytes(batch)
    if size >= 60:              # one bad character anywhere: never decoded, left to orjson
        text = pybase64.b64encode(payload)
        for at in (0, 31, 32, 47, len(text) // 2, len(text) - 5):
            broken = body.replace(text, text[:at] + b"-" + text[at + 1:])
            assert _json.send_from_json(broken, 1) is None


def test_a_bad_character_in_an_early_payload_is_refused_without_reading_unwritten_frames():
    """The batch checksum is taken only over frames that were written: with the first
    payload undecodable, the frames after it are whatever the allocator left there (here
    0xFF bytes, freed just before at the same size), and walking them read far out of
    bounds (a crash of the server on one HTTP send)."""
    good = b64(b"x" * 99)
    body = ('{"messages":[' + ",".join('{"id":%d,"payload":"%s"}' % (i, good if i else "AA*A")
                                        for i in range(100)) + "]}").encode()
    sizes = 256 + 100 * 48 + 99 * 99 + 3
    chunk = bytearray(_wire.build_batch([(i, b"y" * 99, b"", 0) for i in range(100)], 1))
    _wire.stamp_batch(chunk, 0, 0, 2)
    reply = bytes(_json.polled_json(0, 99, [bytes(chunk)]))
    broken_reply = reply.replace(b'"payload":"', b'"payload":"*', 1).replace(b'eXl5', b'eXl', 1)
    for _ in range(20):
        junk = [bytearray(b"\xff" * size) for size in (sizes, sizes + 16, len(chunk) + 16)]
        del junk
        assert _json.send_from_json(body, 1) is None
        junk = [bytearray(b"\xff" * size) for size in (len(chunk) + 16, len(chunk) + 256)]
        del junk
        assert _json.polled_from_json(broken_reply) is None
