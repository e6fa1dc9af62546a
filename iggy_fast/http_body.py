"""Large HTTP message bodies (a send's or a poll's JSON, about a megabyte) through aiohttp
without its copies, for the HTTP server and the HTTP client link alike.

`read_body` reads a body into one buffer of its Content-Length, piece by piece as they
arrive: aiohttp's own read() joins the pieces buffered at each wakeup into a new bytes, then
all of those into another (request.read() copies once more), each a fresh allocation.

`WholeBody` writes one. aiohttp keeps a message's headers back to write them with the first piece of the body in one
call, and on Python before 3.12.9 (where it avoids transport.writelines) that call joins the
two into a new bytes: a copy of the whole body, and for a bytearray body a second one when it
is sliced to the content length. WholeBody writes an empty piece first, which sends the
headers alone, then the body as it is.
"""

from __future__ import annotations

from aiohttp import StreamReader, web
from aiohttp.payload import BytesPayload

PREALLOCATE = 16 * 1024 * 1024


async def read_body(content: StreamReader, length: int | None, limit: int | None = None,
                    into: bytearray | None = None) -> bytearray:
    """All of `content` in one bytearray, fitted to what arrives: `into` when given (a
    buffer kept from an earlier body: refilled where it lies, without the page faults of a
    fresh megabyte), else one allocated at `length` (the Content-Length, if any; at most
    PREALLOCATE, so a false one reserves little). Past `limit` bytes: 413
    (HTTPRequestEntityTooLarge)."""
    body = into if into is not None else bytearray(min(length or 0, limit or PREALLOCATE,
                                                       PREALLOCATE))
    size = 0
    # Not iter_chunks(): the empty body of a GET is aiohttp's shared EmptyStreamReader, whose
    # readchunk() ends an iteration once per process and then never again.
    while not content.at_eof():
        piece, _end_of_chunk = await content.readchunk()
        body[size:size + len(piece)] = piece
        size += len(piece)
        if limit is not None and size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
    del body[size:]
    return body


class WholeBody(BytesPayload):
    """A bytes or bytearray body, written as it is after the headers (see the module
    docstring). Its size is the Content-Length."""

    async def write(self, writer) -> None:
        await writer.write(b"")             # the buffered headers go out alone
        await writer.write(self._value)

    async def write_with_length(self, writer, content_length: int | None) -> None:
        # The request's Content-Length is this body's own size, so nothing is cut.
        await self.write(writer)
