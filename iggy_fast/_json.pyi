"""Type stubs for the compiled `iggy_fast._json` (see _json.pyx for the JSON it writes)."""

from typing import Any, Callable, Iterable

Buffer = bytes | bytearray | memoryview

def polled_json(partition_id: int, current_offset: int, chunks: Iterable[Buffer]) -> bytearray:
    """PolledMessages JSON (`{partition_id, current_offset, count, messages: [...]}`) of the
    stored batches in `chunks`, written in one pass with base64 payloads and user headers as
    [HeaderEntry] (or one base64 string for a block that is not a TLV block). InvalidCommand
    for a truncated batch."""

def batch_from_messages(messages: list, origin_timestamp: int, header_block: Callable[[Any], bytes],
                        bad: Callable[[str, str], Exception],
                        inexact: type[Exception]) -> bytearray:
    """The producer batch of a send's parsed `messages` ([{id, payload: base64,
    user_headers?}], or Iggy's newer {header: {id}, ...}), byte for byte what
    `_wire.build_batch` makes of the same messages; `header_block` turns user headers into
    their TLV block, `bad(field, why)` makes the error for a malformed message, `inexact` is
    raised for an id the JSON parser read as a float."""

def send_json(partitioning: bytes, batch: Buffer) -> bytearray:
    """An HTTP send's body: `{"partitioning":<partitioning>,"messages":[{id, payload:
    base64, user_headers?}, ...]}` written from the producer `batch` in one pass (the client
    direction of batch_from_messages). InvalidCommand for a truncated batch."""

def send_from_json(raw: Buffer, origin_timestamp: int) -> tuple[str | None, str | None, bytearray, int] | None:
    """A send's body read straight from its text: (partitioning kind, partitioning value,
    the producer batch batch_from_messages would make, message count). Only the plain shape
    (ids as numbers up to u128, in `id` or `header.id`; payloads as escape-free base64; no
    user headers; no other keys); None for anything else, which the caller parses with orjson
    (it also makes the right error)."""

def polled_from_json(raw: Buffer) -> bytearray | None:
    """A poll reply's JSON (PolledMessages) read straight into the binary payload the client
    decodes: the 16-byte head, then one batch per run of messages stored together. None when
    the reply is not of the plain shape (user headers, unknown keys, escapes)."""
