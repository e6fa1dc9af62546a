"""The compiled codec on its own: checksums against the xxhash package, golden bytes from the
captures in PROTOCOL.md, batch validation, stamping and slicing, frame cutting."""

from __future__ import annotations

import os
import random

import pytest
import xxhash

from iggy_fast import _wire
from iggy_fast.protocol.errors import IggyError, ProtocolViolation


def test_xxh3_64_matches_xxhash_for_every_length_class():
    rng = random.Random(1)
    lengths = list(range(0, 600)) + [1023, 1024, 1025, 4096, 65536, 1_000_003]
    for n in lengths:
        data = rng.randbytes(n)
        expected = xxhash.xxh3_64_intdigest(data)
        assert _wire.xxh3_64(data) == expected, n                # AVX2 where the CPU has it
        assert _wire.xxh3_64_portable(data) == expected, n       # and the portable path


def test_xxh32_matches_xxhash():
    rng = random.Random(2)
    for n in list(range(0, 100)) + [255, 4096, 100_001]:
        data = rng.randbytes(n)
        for seed in (0, 1, 0xDEADBEEF):
            assert _wire.xxh32(data, seed) == xxhash.xxh32_intdigest(data, seed=seed)


def test_key_routing_matches_the_sdk_capture():
    # PROTOCOL.md §7.6: XXH32(b"user-123") = 214559884 -> partition 1 of 3.
    assert _wire.xxh32(b"user-123") == 214559884
    assert _wire.partition_for_key(b"user-123", 3) == 1


def test_logout_checksum_of_empty_body():
    # PROTOCOL.md §1.8: xxh3-64 of empty input.
    assert _wire.xxh3_64(b"") == 0x2D06800538D394C2


def test_login_body_capture_parses():
    body = bytes.fromhex("002c0000 08 727573742d73646b 06 302e31312e30 04 69676779 04 69676779"
                         " 00000000".replace(" ", ""))
    r = _wire.Reader(body)
    assert r.u32() == 11264
    assert r.name() == "rust-sdk" and r.name() == "0.11.0"
    assert r.name() == "iggy" and r.short_string() == "iggy" and r.long_string() == ""
    r.expect_end()


def test_store_offset_capture_parses():
    # PROTOCOL.md §5.9: store for group "grp", stream "cs", topic "ct", partition 0, offset 2.
    body = bytes.fromhex("020203677270" "02026373" "02026374" "0100000000"
                         "0200000000000000" "01")
    r = _wire.Reader(body)
    assert r.consumer() == (2, "grp")
    assert r.identifier() == "cs" and r.identifier() == "ct"
    assert r.optional_partition() == 0
    assert r.u64() == 2 and r.u8() == 1
    r.expect_end()


def test_send_metadata_capture():
    from iggy_fast.client.core import send_messages_body
    meta = send_messages_body("s1", "t1", 0, 2)
    assert meta == bytes.fromhex("12000000" "02027331" "02027431" "020400000000" "02000000")


# PROTOCOL.md §5.6: CreateTopic from the wheel, stream "s1", 3 partitions, name "t1", gzip,
# 10 s expiry, 10 MB max size, then its option TLVs in key order (§3: [kind][len u32][bytes]).
CREATE_TOPIC_CAPTURE = bytes.fromhex(
    "02027331" "03000000" "027431"
    "0215000000" "636f6d7072657373696f6e5f616c676f726974686d"            # compression_algorithm
    "0204000000" "677a6970"                                              # String "gzip"
    "021a000000" "636f6e73756d65725f6f66667365745f6475726162696c697479"  # consumer_offset_durab.
    "020a000000" "7265706c696361746564"                                  # String "replicated"
    "020a000000" "6475726162696c697479"                                  # durability
    "020a000000" "7265706c696361746564"
    "020e000000" "6d61785f746f7069635f73697a65"                          # max_topic_size
    "0c08000000" "8096980000000000"                                      # Uint64 10 000 000
    "020e000000" "6d6573736167655f657870697279"                          # message_expiry
    "0c08000000" "8096980000000000")                                     # Uint64 10 000 000 µs

# PROTOCOL.md §3.1: global read_streams; stream 0 read_stream; its topic 1 poll_messages.
PERMISSIONS_CAPTURE = bytes.fromhex("00000000000100000000" "01" "00000000" "000100000000"
                                    "01" "01000000" "00000100" "00" "00")


def test_create_topic_capture_decodes_and_encodes():
    from iggy_fast.config import DEFAULTS
    from iggy_fast.protocol.binary import encode_tlv, parse_tlv
    from iggy_fast.server import options

    r = _wire.Reader(CREATE_TOPIC_CAPTURE)
    assert (r.identifier(), r.u32(), r.name()) == ("s1", 3, "t1")
    entries = parse_tlv(r.rest())
    assert [(e[1], e[3]) for e in entries] == [
        (b"compression_algorithm", b"gzip"), (b"consumer_offset_durability", b"replicated"),
        (b"durability", b"replicated"), (b"max_topic_size", (10_000_000).to_bytes(8, "little")),
        (b"message_expiry", (10_000_000).to_bytes(8, "little"))]
    defaults = options.default_settings(DEFAULTS)
    with pytest.raises(IggyError) as e:        # 10 MB is under one 1 GiB segment: Iggy says 1019
        options.resolve(entries, defaults)
    assert e.value.code == 1019
    settings, kept = options.resolve(entries, {**defaults, "segment_size": 8 << 20})
    assert settings["compression"] == 2 and settings["durability"] == "replicated"
    assert settings["message_expiry"] == 10_000_000 and settings["max_topic_size"] == 10_000_000
    assert len(kept) == 5
    encoded = (_wire.Writer().identifier("s1").u32(3).name("t1").getvalue()
               + encode_tlv(entries))
    assert encoded == CREATE_TOPIC_CAPTURE


def test_permissions_and_create_user_captures_decode():
    from iggy_fast.server.service.authz import Grants

    assert len(PERMISSIONS_CAPTURE) == 32
    g = Grants.parse(PERMISSIONS_CAPTURE)
    assert g.glob.names == {"read_streams"}
    assert g.streams[0].names == {"read_stream"} and g.streams[0].topics[1].names == {"poll_messages"}
    assert g.allows("poll", 0, 1) and not g.allows("send", 0, 1) and g.allows_global("read_streams")
    # §5.3: CreateUser "bob"/"secret123", active, with a 32-byte permissions block, no options.
    body = bytes.fromhex("03626f62" "09736563726574313233" "01" "01" "20000000") + PERMISSIONS_CAPTURE
    r = _wire.Reader(body)
    assert (r.name(), r.short_string(), r.u8(), r.u8()) == ("bob", "secret123", 1, 1)
    assert r.raw(r.u32()) == PERMISSIONS_CAPTURE
    r.expect_end()


def test_identifier_and_names_reject_bad_input():
    # Iggy answers a body that does not decode with InvalidCommand (3), identifiers included.
    for bad in (b"\x01\x02\x00\x00", b"\x02\x00", b"\x03\x01x", b"\x02\x02\xff\xfe"):
        with pytest.raises(IggyError) as e:
            _wire.Reader(bad).identifier()
        assert e.value.code == 3, bad
    with pytest.raises(IggyError) as e:
        _wire.Reader(b"\x00").name()
    assert e.value.code == 3
    with pytest.raises(IggyError) as e:
        _wire.Reader(b"\x05ab").name()
    assert e.value.code == 3


def make_batch(n=3, size=10, headers=b""):
    msgs = [(i + 1, bytes([65 + i]) * size, headers, i) for i in range(n)]
    return _wire.build_batch(msgs, 1_000_000)


def test_batch_checksums_match_the_spec_formula():
    batch = make_batch(4)
    b = bytes(batch)
    # per message: xxh3 over frame[8:]
    pos = 256
    checksums = []
    for _ in range(4):
        hlen = int.from_bytes(b[pos + 32:pos + 36], "little")
        plen = int.from_bytes(b[pos + 36:pos + 40], "little")
        frame = b[pos:pos + 48 + hlen + plen]
        assert int.from_bytes(frame[:8], "little") == xxhash.xxh3_64_intdigest(frame[8:])
        checksums.append(frame[:8])
        pos += len(frame)
    expected = xxhash.xxh3_64_intdigest(b[0:40] + b[48:52] + b"".join(checksums))
    assert int.from_bytes(b[40:48], "little") == expected
    assert _wire.validate_batch(batch, 4) == 0


def test_validate_batch_finds_each_fault():
    good = make_batch(3)
    assert _wire.validate_batch(good, 3) == 0
    assert _wire.validate_batch(good, 2) == 4009          # count mismatch
    bad = bytearray(good)
    bad[256 + 48] ^= 1                                    # payload byte of message 0
    assert _wire.validate_batch(bad, 3) == 4027
    bad = bytearray(good)
    bad[40] ^= 1                                          # batch checksum
    assert _wire.validate_batch(bad, 3) == 4039
    bad = bytearray(good)
    bad[100] = 1                                          # reserved byte
    assert _wire.validate_batch(bad, 3) == 3
    assert _wire.validate_batch(good[:-1], 3) == 3        # frames do not tile the batch
    assert _wire.validate_batch(good + b"\0", 3) == 3
    assert _wire.validate_batch(good[:256], 0) == 4009


def test_stamp_keeps_the_batch_valid_and_slices_recompute_the_checksum():
    batch = make_batch(5)
    _wire.stamp_batch(batch, 7, 100, 123456)
    assert _wire.validate_batch(batch, 5) == 0
    assert _wire.batch_info(batch)[:2] == (100, 123456)
    part = _wire.slice_batch(batch, 101, 103)
    assert _wire.validate_batch(bytearray(part), 3) == 3   # offset deltas start at 1, as served
    assert _wire.batch_checksum(part) == int.from_bytes(part[40:48], "little")
    msgs = _wire.iter_messages(part)
    assert [m[0] for m in msgs] == [101, 102, 103]
    assert [m[4] for m in msgs] == [b"B" * 10, b"C" * 10, b"D" * 10]
    assert _wire.slice_batch(batch, 200, 300) is None


def test_messages_decode_as_records_built_in_c_that_equal_the_tuples():
    # The consumer's message iterator gets named tuples built without a Python call each;
    # they must hold exactly the plain tuples' fields, u128 ids included, and own them.
    from iggy_fast.client.types import SendMessage, build_batch
    from iggy_fast.protocol.models import Message
    batch, _ = build_batch([SendMessage(b"p%d" % i, {"k": i}, (1 << 127) + i) for i in range(5)]
                           + [b"", "text"])
    plain = _wire.iter_messages(batch)
    records = _wire.iter_messages(batch, Message)
    assert [type(m) for m in records] == [Message] * 7
    assert records == plain
    assert records[2].id == (1 << 127) + 2 and records[2].payload == b"p2"
    assert records[2].headers == {b"k": (2).to_bytes(8, "little")}
    assert records[6].payload == b"text" and records[6].id < 1 << 128
    del batch, plain                       # the records keep their own fields
    assert records[1]._asdict()["payload"] == b"p1"
    with pytest.raises(TypeError):
        _wire.iter_messages(bytearray(make_batch(1)), tuple)


def test_frame_reader_cuts_frames_across_chunks_and_grows():
    frames = []
    for n in (0, 10, 300_000, 5):
        body = os.urandom(n)
        frames.append(_wire.request_header(2, 1, 0, 1, b"\x01" * 16, n) + body)
    stream = b"".join(frames)
    reader = _wire.FrameReader(1024)
    got = [bytes(header) + bytes(body)
           for header, body in read_like_a_socket(reader, stream, random.Random(3), 70_000)]
    assert got == frames


def read_like_a_socket(reader, stream: bytes, rng, most: int = 256 * 1024):
    """Feed `stream` through get_buffer/buffer_updated in socket-sized reads; yield frames."""
    pos = 0
    while pos < len(stream):
        buf = reader.get_buffer()
        n = min(len(buf), rng.randint(1, most), len(stream) - pos)
        buf[:n] = stream[pos:pos + n]
        reader.buffer_updated(n)
        pos += n
        while (frame := reader.next_frame()) is not None:
            yield frame


def test_frame_reader_memory_follows_what_arrives_not_what_is_announced():
    reader = _wire.FrameReader()
    read_room = 64 * 1024                           # the least a grown buffer offers a read
    header = _wire.request_header(2, 1, 0, 1, b"\x01" * 16, 64 * 1024 * 1024 - 256)
    sent = 0
    for chunk in [header + b"x" * 1000] + [b"y" * 1000] * 10:
        mv = reader.get_buffer()
        mv[:len(chunk)] = chunk
        reader.buffer_updated(len(chunk))
        sent += len(chunk)
        assert reader.next_frame() is None
    assert reader.capacity <= sent + read_room      # 64 MiB announced, 11 KB sent
    while sent < 3_000_000:                         # as bytes arrive, the buffer keeps up
        mv = reader.get_buffer()
        n = min(len(mv), 100_000)
        reader.buffer_updated(n)
        sent += n
        assert reader.next_frame() is None
        assert reader.capacity <= 2 * sent + read_room


def test_frame_reader_takes_1mb_batches_without_regrowing():
    # The SDK's 1000 x 1000-byte batch: after the first, each one is read into the same buffer.
    body = 4 + 18 + 256 + 1000 * (48 + 1000)
    frames = [_wire.request_header(160, 0, 1, i, b"\x01" * 16, body) + bytes([i]) * body
              for i in range(12)]
    reader = _wire.FrameReader()
    rng = random.Random(4)
    capacities = []
    for i, (header, got) in enumerate(read_like_a_socket(reader, b"".join(frames), rng)):
        assert bytes(header) + bytes(got) == frames[i]
        capacities.append(reader.capacity)
    assert len(capacities) == 12
    assert capacities[0] >= 256 + body and len(set(capacities)) == 1


def test_frame_reader_rejects_bad_sizes():
    for size in (255, 64 * 1024 * 1024 + 1):
        reader = _wire.FrameReader()
        header = bytearray(256)
        header[48:52] = size.to_bytes(4, "little")
        reader.feed(header)
        with pytest.raises(ProtocolViolation):
            reader.next_frame()


def test_frame_reader_gives_back_a_huge_buffer_once_drained():
    big = _wire.request_header(2, 1, 0, 1, b"\x01" * 16, 20_000_000) + bytes(20_000_000)
    reader = _wire.FrameReader()
    reader.feed(big)
    header, body = reader.next_frame()
    assert body.nbytes == 20_000_000
    del header, body
    assert len(reader.get_buffer()) <= 256 * 1024
