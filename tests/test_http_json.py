"""The JSON codec of the HTTP API without a server: the compiled poll encoder (_json.polled_json)
against a reference written here from _wire.iter_messages, for random batches (hypothesis);
request decoding of wrong types; exact u128 ids; permissions both ways."""

from __future__ import annotations

import base64
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iggy_fast import _wire
from iggy_fast._json import polled_json, send_json
from iggy_fast.protocol import json as js
from iggy_fast.protocol.errors import InvalidCommand, InvalidFormat

KINDS = js.KIND_NAMES


def tlv(entries) -> bytes:
    return b"".join(struct.pack("<BI", kk, len(k)) + k + struct.pack("<BI", vk, len(v)) + v
                    for kk, k, vk, v in entries)


def reference(partition_id, current_offset, chunks) -> dict:
    """The PolledMessages document as Iggy shapes it, message by message in Python."""
    messages = []
    for chunk in chunks:
        for offset, ts, origin, mid, payload, headers, checksum in _wire.iter_messages(chunk):
            entries, pos = [], 0
            while pos < len(headers):
                kk, kl = headers[pos], struct.unpack_from("<I", headers, pos + 1)[0]
                k = headers[pos + 5:pos + 5 + kl]
                pos += 5 + kl
                vk, vl = headers[pos], struct.unpack_from("<I", headers, pos + 1)[0]
                v = headers[pos + 5:pos + 5 + vl]
                pos += 5 + vl
                entries.append({"key": {"kind": KINDS[kk], "value": base64.b64encode(k).decode()},
                                "value": {"kind": KINDS[vk],
                                          "value": base64.b64encode(v).decode()}})
            messages.append({"header": {"checksum": checksum, "id": mid, "offset": offset,
                                        "timestamp": ts, "origin_timestamp": origin,
                                        "user_headers_length": len(headers),
                                        "payload_length": len(payload), "reserved": 0},
                             "payload": base64.b64encode(payload).decode(),
                             "user_headers": entries})
    return {"partition_id": partition_id, "current_offset": current_offset,
            "count": len(messages), "messages": messages}


entry = st.tuples(st.integers(1, 15), st.binary(min_size=1, max_size=20),
                  st.integers(1, 15), st.binary(min_size=1, max_size=20))
message = st.tuples(st.integers(0, 2**128 - 1), st.binary(max_size=300),
                    st.lists(entry, max_size=3).map(tlv), st.integers(0, 1000))
batch = st.tuples(st.lists(message, min_size=1, max_size=8), st.integers(0, 2**63))


@settings(max_examples=200, deadline=None)
@given(st.lists(batch, max_size=3), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_polled_json_matches_the_reference(batches, partition_id, current_offset):
    chunks = [bytes(_wire.build_batch(msgs, origin)) for msgs, origin in batches]
    written = json.loads(bytes(polled_json(partition_id, current_offset, chunks)))
    assert written == reference(partition_id, current_offset, chunks)


def test_polled_json_shows_a_malformed_header_block_as_base64_and_refuses_truncation():
    chunk = bytes(_wire.build_batch([(1, b"x", b"\x00junk", 0)], 5))
    doc = json.loads(bytes(polled_json(0, 0, [chunk])))
    assert doc["messages"][0]["user_headers"] == base64.b64encode(b"\x00junk").decode()
    with pytest.raises(InvalidCommand):
        polled_json(0, 0, [chunk[:-1]])
    assert json.loads(bytes(polled_json(7, 0, []))) == {"partition_id": 7, "current_offset": 0,
                                                        "count": 0, "messages": []}


def test_send_keeps_u128_ids_exactly_and_refuses_wrong_types():
    big = 2**128 - 1
    raw = ('{"partitioning":{"kind":"balanced"},"messages":[{"id":%d,"payload":"eA=="},'
           '{"header":{"id":5},"payload":""}]}' % big).encode()
    req = js.decode_request(js.decode_send, {"stream_id": "s", "topic_id": "1"}, {}, raw)
    assert req.stream == "s" and req.topic == 1 and req.count == 2
    assert [m[3] for m in _wire.iter_messages(req.batch)] == [big, 5]
    for bad in (b'{"messages":[{"id":1.5,"payload":""}]}',
                b'{"messages":[{"id":2.0,"payload":""}]}', b'{"messages":[{"id":%d}]}' % big,
                b'{"messages":[{"id":%d,"payload":""}]}' % (big + 1), b'[]', b'{"a":'):
        with pytest.raises(InvalidFormat):
            js.decode_request(js.decode_send, {"stream_id": "s", "topic_id": "t"}, {}, bad)


def test_permissions_round_trip():
    perms = {"global": {name: i % 2 == 0 for i, name in enumerate(js.GLOBAL_PERMISSION_FLAGS)},
             "streams": {"3": {**{n: True for n in js.STREAM_PERMISSION_FLAGS},
                               "topics": {"4": {n: n == "read_topic"
                                                for n in js.TOPIC_PERMISSION_FLAGS}}},
                         "5": {**{n: False for n in js.STREAM_PERMISSION_FLAGS},
                               "topics": None}}}
    assert js.permissions_json(js.permissions_block(perms)) == perms
    assert js.permissions_block(None) is None
    with pytest.raises(InvalidFormat):
        js.permissions_block({"global": {"read_users": "yes"}})
    with pytest.raises(InvalidFormat):
        js.permissions_block({"streams": {"x": {}}})


def test_byte_sizes_read_like_iggys():
    assert [js.byte_size(n) for n in (0, 999, 1000, 69_092, 1_500_000, 10**12)] == [
        "0 B", "999 B", "1 KB", "69.092 KB", "1.5 MB", "1 TB"]


@settings(max_examples=200, deadline=None)
@given(st.lists(message, min_size=1, max_size=10), st.integers(0, 2**64 - 1))
def test_a_sends_batch_is_the_one_build_batch_makes(messages, origin):
    entries = [{"id": mid, "payload": base64.b64encode(payload).decode(),
                **({"user_headers": base64.b64encode(headers).decode()} if headers else {})}
               for mid, payload, headers, _delta in messages]
    made = js.batch_from_messages(entries, origin, js.header_block, js.bad, js.InexactInteger)
    assert bytes(made) == bytes(_wire.build_batch(
        [(mid, payload, headers, 0) for mid, payload, headers, _delta in messages], origin))


@pytest.mark.parametrize("payload", ["eA=", "e===", "eA=A", "@@@@", "eA==eA==", "YWJj\n", 5])
def test_a_payload_that_is_not_padded_base64_is_refused(payload):
    with pytest.raises(InvalidFormat):
        js.decode_send({"stream_id": "s", "topic_id": "t"}, {},
                       {"messages": [{"id": 1, "payload": payload}]})


@pytest.mark.parametrize("mid", [0, 9, 10, 99, 100, 10**19 - 1, 10**19, 10**19 + 1, 2**64 - 1,
                                 2**64, 10**38 - 1, 10**38, 2 * 10**38 + 7, 2**128 - 1])
def test_ids_and_numbers_are_written_exactly_at_the_digit_boundaries(mid):
    """The writers split a u128 into parts of 19 digits and write digit pairs: every part
    boundary and pair boundary, through the poll reply and the send body."""
    chunk = bytearray(_wire.build_batch([(mid, b"x", b"", 0)], mid % 2**64))
    _wire.stamp_batch(chunk, 0, mid % 2**64, mid >> 64)
    doc = json.loads(bytes(polled_json(0, mid % 2**64, [bytes(chunk)])))
    header = doc["messages"][0]["header"]
    assert (header["id"], header["offset"], header["timestamp"], doc["current_offset"]) == (
        mid, mid % 2**64, mid >> 64, mid % 2**64)
    assert json.loads(bytes(send_json(b"null", chunk)))["messages"][0]["id"] == mid
