"""Type stubs for the compiled codec `iggy_fast._wire` (see _wire.pyx for the wire layouts)."""

from typing import Any

HEADER_SIZE: int
BATCH_HEADER_SIZE: int
MESSAGE_HEADER_SIZE: int
POLL_HEADER_SIZE: int
MAX_FRAME_SIZE: int
COMMAND_REQUEST: int
COMMAND_REPLY: int
COMMAND_EVICTION: int

Buffer = bytes | bytearray | memoryview

def xxh3_64(data: Buffer) -> int:
    """XXH3-64 with seed 0."""

def xxh3_64_portable(data: Buffer) -> int:
    """XXH3-64 through the portable C path (for tests on AVX2 machines)."""

def xxh32(data: Buffer, seed: int = 0) -> int:
    """XXH32 with the given seed."""

def partition_for_key(key: Buffer, partitions_count: int) -> int:
    """xxh32(key, 0) % partitions_count, as the official SDK routes a message key."""

class FrameReader:
    """A reusable receive buffer that cuts a byte stream into (header, body) frames in place."""
    max_frame: int
    """The largest frame accepted; settable (the driver lowers it until a login)."""
    pending: int
    capacity: int
    """The size of the receive buffer now (it grows with the bytes received, not announced;
    0 before the first read and after shrink())."""
    def __init__(self, initial: int = ..., max_frame: int = ...) -> None: ...
    def shrink(self) -> int:
        """Give the buffer back if it holds nothing (an idle connection keeps none); returns
        the bytes given back."""
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Free space to read into; invalidates views returned earlier."""
    def buffer_updated(self, nbytes: int) -> None: ...
    def feed(self, data: Buffer) -> None:
        """Copy a received chunk in (for transports that deliver whole chunks)."""
    def next_frame(self) -> tuple[memoryview, memoryview] | None:
        """The next complete frame; raises ProtocolViolation on an impossible size."""

class RequestHeader:
    raw: bytes
    size: int
    operation: int
    code: int
    session: int
    request: int
    has_client: bool
    request_checksum_lo: int
    request_checksum_hi: int
    command: int
    @property
    def client(self) -> int: ...

def parse_request_header(header: Buffer) -> RequestHeader: ...
def body_checksum_ok(h: RequestHeader, body: Buffer) -> bool: ...
def reply_header(req: RequestHeader, operation: int, body_length: int, status: int = 0) -> bytes: ...
def eviction_frame(req: RequestHeader, reason: int, version: int = 0, version_min: int = 0) -> bytes: ...
def request_header(operation: int, code: int, session: int, request: int, client: bytes,
                   body_length: int, body_checksum: int = 0) -> bytes: ...
def parse_reply_header(header: Buffer) -> tuple[int, int, int, int, int]:
    """(size, command, operation, status, eviction reason)."""

class Reader:
    """Bounds-checked body cursor; overruns raise IggyError(3)."""
    pos: int
    remaining: int
    def __init__(self, data: Buffer, pos: int = 0) -> None: ...
    def at_end(self) -> bool: ...
    def expect_end(self) -> None: ...
    def u8(self) -> int: ...
    def u32(self) -> int: ...
    def u64(self) -> int: ...
    def u128(self) -> int: ...
    def raw(self, k: int) -> bytes: ...
    def view(self, k: int) -> Any: ...
    def rest(self) -> bytes: ...
    def name(self) -> str: ...
    def short_string(self) -> str: ...
    def long_string(self) -> str: ...
    def identifier(self) -> int | str: ...
    def consumer(self) -> tuple[int, int | str]: ...
    def optional_partition(self) -> int | None: ...

class Writer:
    """Append-only encoder; every method returns the writer."""
    buf: bytearray
    def u8(self, v: int) -> Writer: ...
    def u32(self, v: int) -> Writer: ...
    def u64(self, v: int) -> Writer: ...
    def f32(self, v: float) -> Writer: ...
    def raw(self, data: Buffer) -> Writer: ...
    def name(self, s: str) -> Writer: ...
    def long_string(self, s: str) -> Writer: ...
    def identifier(self, ident: int | str) -> Writer: ...
    def getvalue(self) -> bytes: ...

def validate_batch(batch: Buffer, expected_count: int, verify_messages: bool = True) -> int:
    """0, or the Iggy error code of the first fault (3, 4009, 4025, 4027, 4039)."""
def stamp_batch(batch: bytearray | memoryview, partition_id: int, base_offset: int,
                base_timestamp: int) -> None: ...
def batch_info(batch: Buffer) -> tuple[int, int, int, int]:
    """(base_offset, base_timestamp, batch_length, message_count)."""
def batch_checksum(batch: Buffer) -> int: ...
def slice_batch(batch: Buffer, first: int, last: int) -> bytes | None: ...
def build_batch(messages: list[tuple[int, Buffer, Buffer, int]], origin_timestamp: int) -> bytearray:
    """Encode (id, payload, user_headers, timestamp_delta) tuples as one producer batch."""
def iter_messages(batches: Buffer, record_type: type | None = None) -> list[tuple[int, int, int, int, bytes, bytes, int]]:
    """(offset, timestamp, origin_timestamp, id, payload, user_headers, checksum) per message."""

def encode_batch(payloads: list[Buffer | str], origin_timestamp: int,
                 headers: Buffer | list[Buffer | None] | None = None,
                 ids: list[int] | Buffer | None = None) -> bytearray:
    """One producer batch from payloads (bytes, str as UTF-8, buffers), each copied once in C;
    `headers` one encoded block for all or one per message; `ids` one int per message, 16
    random bytes per message (UUIDv4 ids), or None (all 0)."""
def poll_summary(body: Buffer) -> tuple[int, int, int, int, int, int]:
    """(partition_id, current_offset, count, first_offset, last_offset, payload_bytes) of a
    PollMessages reply body, every frame bound checked (offsets -1 when empty)."""
def poll_payloads(body: Buffer) -> list[memoryview]:
    """Each payload of a PollMessages reply body, as a memoryview slice of it (no copy)."""
def payload_spans(payloads: list[Buffer | str], start: int, stop: int, batch_length: int,
                  batch_bytes: int) -> list[tuple[int, int, int]]:
    """payloads[start:stop] cut into (start, stop, payload bytes) spans of at most
    `batch_length` messages and `batch_bytes` bytes (a bigger payload alone); sizes read in C."""
def encode_parts(buf: bytearray | None,
                 parts: list[tuple[list[Buffer | str], int, int, Buffer | None]],
                 origin_timestamp: int, seed: Buffer | None = None) -> tuple[bytearray, int]:
    """One producer batch from parts (payloads, start, stop, headers block) written into `buf`
    when large enough (else a new bytearray): (buffer, batch length). `seed`: 32 random bytes
    for UUIDv4 ids drawn by xoshiro256**, or None for ids 0."""
