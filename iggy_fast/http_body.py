"""`WholeBody`: a large HTTP message body (a send's or a poll's JSON, about a megabyte) that
aiohttp writes without copying, shared by the HTTP server and the HTTP client link.

aiohttp keeps a message's headers back to write them with the first piece of the body in one
call, and on Python before 3.12.9 (where it avoids transport.writelines) that call joins the
two into a new bytes: a copy of the whole body, and for a bytearray body a second one when it
is sliced to the content length. WholeBody writes an empty piece first, which sends the
headers alone, then the body as it is.
"""

from __future__ import annotations

from aiohttp.payload import BytesPayload


class WholeBody(BytesPayload):
    """A bytes or bytearray body, written as it is after the headers (see the module
    docstring). Its size is the Content-Length."""

    async def write(self, writer) -> None:
        await writer.write(b"")             # the buffered headers go out alone
        await writer.write(self._value)

    async def write_with_length(self, writer, content_length: int | None) -> None:
        # The request's Content-Length is this body's own size, so nothing is cut.
        await self.write(writer)
