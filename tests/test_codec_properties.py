"""Property-based tests (hypothesis) of the compiled codec, iggy_fast/_wire.pyx.

Writer then Reader gives back every primitive, identifier and name; a Reader over arbitrary
bytes either decodes or raises InvalidCommand (never anything else); FrameReader cuts the same
frames out of a byte stream however it is chunked; validate_batch answers a code from its list
for any bytes; batches the codec builds validate and iterate back; checksums agree with the
`xxhash` package. test_wire_codec.py has the golden captures; this file has the generality.
"""

from __future__ import annotations

import struct

import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from iggy_fast import _wire
from iggy_fast.protocol.errors import InvalidCommand, ProtocolViolation

u8s = st.integers(0, 2**8 - 1)
u32s = st.integers(0, 2**32 - 1)
u64s = st.integers(0, 2**64 - 1)
# Names are 1..255 UTF-8 bytes on the wire, whatever their length in characters.
names = st.text(min_size=1, max_size=80).filter(lambda s: len(s.encode()) <= 255)
identifiers = st.one_of(u32s, names)

settings.register_profile("codec", max_examples=300, deadline=None)
settings.load_profile("codec")


@given(st.lists(st.tuples(st.sampled_from(["u8", "u32", "u64", "f32"]), u64s), max_size=30))
def test_writer_reader_round_trip_of_integers(fields):
    w = _wire.Writer()
    expected = []
    for kind, value in fields:
        if kind == "u8":
            value %= 2**8
        elif kind in ("u32", "f32"):
            value %= 2**32
        if kind == "f32":
            # Any 32-bit pattern that is a float in Python survives the trip unchanged.
            value = struct.unpack("<f", value.to_bytes(4, "little"))[0]
            if value != value:
                continue
        getattr(w, kind)(value)
        expected.append((kind, value))
    r = _wire.Reader(w.getvalue())
    for kind, value in expected:
        if kind == "f32":
            assert struct.unpack("<f", r.raw(4))[0] == value
        else:
            assert getattr(r, kind)() == value
    r.expect_end()


@given(st.lists(st.one_of(
    st.tuples(st.just("identifier"), identifiers),
    st.tuples(st.just("name"), names),
    st.tuples(st.just("long_string"), st.text(max_size=300)),
    st.tuples(st.just("raw"), st.binary(max_size=64)),
), max_size=20))
def test_writer_reader_round_trip_of_identifiers_names_and_strings(fields):
    w = _wire.Writer()
    for kind, value in fields:
        getattr(w, kind)(value)
    r = _wire.Reader(w.getvalue())
    for kind, value in fields:
        got = r.raw(len(value)) if kind == "raw" else getattr(r, kind)()
        assert got == value and type(got) is type(value)
    assert r.at_end() and r.remaining == 0


@given(u128=st.integers(0, 2**128 - 1), flag=u8s, part=u32s, kind=st.sampled_from([1, 2]),
       ident=identifiers)
def test_reader_composites(u128, flag, part, kind, ident):
    body = (u128.to_bytes(16, "little") + bytes([flag]) + part.to_bytes(4, "little")
            + bytes([kind]) + _wire.Writer().identifier(ident).getvalue())
    r = _wire.Reader(body)
    assert r.u128() == u128
    assert r.optional_partition() == (part if flag else None)
    assert r.consumer() == (kind, ident)
    r.expect_end()


@given(st.binary(max_size=300), st.lists(st.sampled_from(
    ["u8", "u32", "u64", "u128", "name", "short_string", "long_string", "identifier",
     "consumer", "optional_partition", "rest"]), min_size=1, max_size=12))
def test_reader_on_random_bytes_decodes_or_raises_invalid_command(data, reads):
    r = _wire.Reader(data)
    for read in reads:
        before = r.pos
        try:
            getattr(r, read)()
        except InvalidCommand as e:
            assert e.code == 3
            return
        assert before <= r.pos <= len(data)


@given(st.binary(max_size=40), st.integers(-5, 50))
def test_reader_raw_and_view_stay_in_bounds(data, k):
    r = _wire.Reader(data)
    try:
        got = r.raw(k)
    except InvalidCommand:
        assert k < 0 or k > len(data)
        return
    assert got == data[:k] and bytes(_wire.Reader(data).view(k)) == data[:k]


def frame(body: bytes, tag: int) -> bytes:
    header = bytearray(256)
    header[48:52] = (256 + len(body)).to_bytes(4, "little")
    header[60] = tag
    return bytes(header) + body


@given(bodies=st.lists(st.binary(max_size=3000), min_size=1, max_size=8), data=st.data())
def test_frame_reader_cuts_the_same_frames_from_any_chunking(bodies, data):
    stream = b"".join(frame(b, i) for i, b in enumerate(bodies))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    # A small buffer so the stream crosses compaction and growth.
    reader = _wire.FrameReader(initial=512)
    got = []
    for chunk in chunks:
        if data.draw(st.booleans()):
            reader.feed(chunk)
        else:      # the BufferedProtocol path: read straight into the offered buffer
            view = chunk
            while view:
                buf = reader.get_buffer()
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                reader.buffer_updated(n)
                view = view[n:]
        while (f := reader.next_frame()) is not None:
            got.append((bytes(f[0])[60], bytes(f[1])))
    assert got == [(i, b) for i, b in enumerate(bodies)]
    assert reader.pending == 0


@given(size=st.one_of(st.integers(0, 255), st.integers(64 * 1024 * 1024 + 1, 2**32 - 1)))
def test_frame_reader_rejects_impossible_sizes(size):
    reader = _wire.FrameReader()
    header = bytearray(256)
    header[48:52] = size.to_bytes(4, "little")
    reader.feed(header)
    try:
        reader.next_frame()
    except ProtocolViolation:
        return
    raise AssertionError(f"size {size} accepted")


VALIDATE_CODES = {0, 3, 4009, 4025, 4027, 4039}


@given(st.binary(max_size=2000), u32s, st.booleans())
def test_validate_batch_never_crashes_on_random_bytes(data, count, verify):
    assert _wire.validate_batch(data, count, verify) in VALIDATE_CODES


messages = st.lists(st.tuples(st.integers(0, 2**128 - 1), st.binary(min_size=1, max_size=200),
                              st.binary(max_size=50), u32s), min_size=1, max_size=10)


@given(messages, st.integers(0, 2**62), st.data())   # origin: a µs timestamp
def test_built_batches_validate_iterate_back_and_refuse_any_flipped_bit(msgs, origin, data):
    batch = _wire.build_batch(msgs, origin)
    assert _wire.validate_batch(batch, len(msgs)) == 0
    got = _wire.iter_messages(batch)
    assert [(m[3], m[4], m[5]) for m in got] == [(i, p, h) for i, p, h, _ in msgs]
    assert [m[2] for m in got] == [origin + d for *_, d in msgs]
    # The batch checksum is the spec's formula, computed by the xxhash package.
    sums = [batch[p:p + 8] for p in message_offsets(batch)]
    assert int.from_bytes(batch[40:48], "little") == xxhash.xxh3_64_intdigest(
        bytes(batch[0:40]) + bytes(batch[48:52]) + b"".join(sums))
    # Every byte is covered (header fields by the batch checksum or the zero and length
    # checks, message bytes by their checksum): any one flipped bit is refused.
    at = data.draw(st.integers(0, len(batch) * 8 - 1))
    bad = bytearray(batch)
    bad[at // 8] ^= 1 << (at % 8)
    assert _wire.validate_batch(bad, len(msgs)) in VALIDATE_CODES - {0}


def message_offsets(batch) -> list[int]:
    pos, out = 256, []
    for _ in range(int.from_bytes(batch[48:52], "little")):
        out.append(pos)
        pos += 48 + int.from_bytes(batch[pos + 32:pos + 36], "little") \
            + int.from_bytes(batch[pos + 36:pos + 40], "little")
    return out


@given(st.binary(max_size=5000), st.integers(0, 2**32 - 1))
def test_checksums_match_the_xxhash_package(data, seed):
    assert _wire.xxh3_64(data) == xxhash.xxh3_64_intdigest(data)
    assert _wire.xxh3_64_portable(data) == xxhash.xxh3_64_intdigest(data)
    assert _wire.xxh32(data, seed) == xxhash.xxh32_intdigest(data, seed=seed)


@given(st.binary(max_size=64), st.integers(1, 10_000))
def test_key_routing_is_xxh32_modulo(key, partitions):
    assert _wire.partition_for_key(key, partitions) == xxhash.xxh32_intdigest(key) % partitions


@given(op=u8s, code=u32s, session=u64s, request=u64s, client=st.binary(min_size=16, max_size=16),
       body_length=st.integers(0, 2**20), checksum=u64s, status=u32s)
def test_request_header_round_trip_and_reply_echo(op, code, session, request, client,
                                                  body_length, checksum, status):
    raw = _wire.request_header(op, code, session, request, client, body_length, checksum)
    h = _wire.parse_request_header(raw)
    assert (h.size, h.operation, h.session, h.request, h.request_checksum_lo, h.command) == \
        (256 + body_length, op, session, request, checksum, 5)
    assert h.code == (code if op == 2 else 0)
    assert h.client == int.from_bytes(client, "little")
    assert h.has_client == (client != bytes(16))
    reply = _wire.reply_header(h, op, body_length, status)
    assert _wire.parse_reply_header(reply) == (256 + body_length, 8, op, status, 0)
    assert reply[160:176] == client and reply[200:208] == raw[168:176]
