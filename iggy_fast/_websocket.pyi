"""Type stubs for the compiled WebSocket framing module `iggy_fast._websocket` (see
_websocket.pyx)."""

from typing import Iterable

Buffer = bytes | bytearray | memoryview

CONTINUATION: int
TEXT: int
BINARY: int
CLOSE: int
PING: int
PONG: int
NORMAL: int
PROTOCOL_ERROR: int
UNSUPPORTED_DATA: int
MESSAGE_TOO_BIG: int
TRY_AGAIN_LATER: int

class FrameDecoder:
    """Frames of one direction of one connection, decoded in place in the receive buffer."""
    discard: bool
    events: list[tuple[int, bytes]]
    error_code: int
    error_reason: str
    def __init__(self, masked: bool, max_message: int = 0) -> None: ...
    def decode(self, buf: bytearray | memoryview, n: int) -> int:
        """Decode the n bytes just read at the start of `buf`; returns how many bytes of
        data payload now lie unmasked at its start."""

def frame_header(opcode: int, length: int) -> bytes:
    """The header of an unmasked, unfragmented frame of `length` payload bytes."""

def masked_frame(opcode: int, pieces: Iterable[Buffer], key: bytes) -> bytearray:
    """One masked frame carrying `pieces` in order, masked with `key` as it is copied."""

def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's body."""

def accept_key(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key."""
