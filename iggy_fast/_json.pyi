"""Type stubs for the compiled `iggy_fast._json` (see _json.pyx for the JSON it writes)."""

from typing import Iterable

Buffer = bytes | bytearray | memoryview

def polled_json(partition_id: int, current_offset: int, chunks: Iterable[Buffer]) -> bytearray:
    """PolledMessages JSON (`{partition_id, current_offset, count, messages: [...]}`) of the
    stored batches in `chunks`, written in one pass with base64 payloads and user headers as
    [HeaderEntry] (or one base64 string for a block that is not a TLV block). InvalidCommand
    for a truncated batch."""
