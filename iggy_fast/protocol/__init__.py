"""The Iggy protocol as both ends speak it: tables, error classes, and the codecs built on them.

Shared by the server and the client, and free of I/O: no sockets, no clock, no event loop.
`codes` holds the tables (commands, operations, result framing, versions, eviction reasons),
`errors` the error classes; the binary codec's hot parts are compiled in `iggy_fast._wire`.
"""
