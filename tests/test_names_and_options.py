"""The last compatibility gaps with Iggy, through the official SDK: a stream or topic name may
be any 1..255 bytes of UTF-8 (spaces leading, trailing or alone), and topic options come back
typed in the catalog's kinds in GetTopic and GetTopics, explicit and derived alike, whether
the client sent them typed or as Strings, and after a restart."""

from __future__ import annotations

import pytest
from apache_iggy import IggyClient

from conftest import ROOT, ServerProcess

GIB = 1024**3
NEVER = 2**64 - 1


async def root(srv) -> IggyClient:
    c = IggyClient(srv.address)
    await c.connect()
    await c.login_user(*ROOT)
    return c


async def test_names_of_spaces_are_names(server):
    c = await root(server)
    names = [" ", "  x", "x  ", "  ", "\u00a0é ", "n" * 255]
    for name in names:
        await c.create_stream(name)
        assert (await c.get_stream(name)).name == name
        await c.create_topic(stream=name, name=" ", partitions_count=1)
        await c.create_topic(stream=name, name=" t ", partitions_count=1)
        assert sorted(t.name for t in await c.get_topics(name)) == [" ", " t "]
    listed = {s.name for s in await c.get_streams()}
    assert set(names) <= listed
    # Names are exact: " " and "  " are two streams, and a taken one is refused.
    with pytest.raises(RuntimeError):
        await c.create_stream(" ")
    for bad in ("", "n" * 256):
        with pytest.raises(RuntimeError):
            await c.create_stream(bad)
    await c.update_stream("  x", " renamed ")
    assert (await c.get_stream(" renamed ")) is not None
    assert await c.get_stream("  x") is None


def scalars(options) -> dict:
    return options.to_scalar_dict()


async def test_topic_options_are_typed_explicit_and_derived(tmp_path):
    srv = ServerProcess(tmp_path / "typed").start()
    try:
        c = await root(srv)
        await c.create_stream("s")
        await c.create_topic(stream="s", name="strings", partitions_count=1,
                             options={"enforce_fsync": "true", "segment_size": "1 MiB",
                                      "max_topic_size": "1 GiB", "message_expiry": "1 h",
                                      "x_custom": "kept"})
        await c.create_topic(stream="s", name="typed", partitions_count=1,
                             segment_size=2 * 1024 * 1024, preallocate_segments=True,
                             messages_required_to_save=10)
        await c.create_topic(stream="s", name="defaults", partitions_count=1)

        def check(topics: dict) -> None:
            strings = scalars(topics["strings"].options)
            assert strings["enforce_fsync"] is True
            assert strings["segment_size"] == 1024 * 1024
            assert strings["max_topic_size"] == GIB
            assert strings["message_expiry"] == 3600 * 10**6
            assert strings["x_custom"] == "kept"          # not a catalog key: verbatim
            typed = scalars(topics["typed"].options)
            assert typed["segment_size"] == 2 * 1024 * 1024
            assert typed["preallocate_segments"] is True
            assert typed["messages_required_to_save"] == 10
            derived = scalars(topics["defaults"].derived_options)
            assert derived["enforce_fsync"] is False and derived["segment_size"] == GIB
            assert derived["max_topic_size"] == NEVER
            assert derived["preallocate_segments"] is False
            assert "enforce_fsync" not in scalars(topics["strings"].derived_options)

        for _ in range(2):                          # before and after a restart
            one = {name: await c.get_topic("s", name)
                   for name in ("strings", "typed", "defaults")}
            check(one)
            check({t.name: t for t in await c.get_topics("s")})
            assert srv.stop() == 0
            srv.start()
            c = await root(srv)
        # The catalog declares the kinds the topics show.
        kinds = {o.key: o.kind for o in await c.describe_options("topic")}
        assert kinds["enforce_fsync"] == "bool" and kinds["segment_size"] == "uint64"
    finally:
        assert srv.stop() == 0
