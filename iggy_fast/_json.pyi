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
