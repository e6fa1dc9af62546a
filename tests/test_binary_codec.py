"""The binary codec of the commands (iggy_fast.protocol.binary), in process: captured bodies
decode to the typed requests they stand for, a body must be exactly its layout, and the
dispatcher's table agrees with the protocol's tables."""

from __future__ import annotations

import pytest

from iggy_fast.protocol import binary
from iggy_fast.protocol import requests as rq
from iggy_fast.protocol.codes import COMMANDS as PROTOCOL_COMMANDS
from iggy_fast.protocol.codes import EMPTY_BODY
from iggy_fast.protocol.errors import InvalidCommand
from iggy_fast.server.dispatch import COMMANDS

# PROTOCOL.md §5.3: CreateUser "bob"/"secret123", active, a 32-byte permissions block.
PERMISSIONS = bytes.fromhex("00000000000100000000" "01" "00000000" "000100000000"
                            "01" "01000000" "00000100" "00" "00")
CREATE_USER = (bytes.fromhex("03626f62" "09736563726574313233" "01" "01" "20000000")
               + PERMISSIONS)
# §5.9: store offset 2 for group "grp" of stream "cs", topic "ct", partition 0.
STORE_OFFSET = bytes.fromhex("020203677270" "02026373" "02026374" "0100000000"
                             "0200000000000000" "01")


def test_captured_bodies_decode_to_their_requests():
    assert binary.decode_create_user(memoryview(CREATE_USER)) == rq.CreateUser(
        "bob", "secret123", 1, PERMISSIONS)
    assert binary.decode_store_consumer_offset(memoryview(STORE_OFFSET)) == \
        rq.StoreConsumerOffset(2, "grp", "cs", "ct", 0, 2)


@pytest.mark.parametrize("decode, body", [
    (binary.decode_create_user, CREATE_USER),
    (binary.decode_store_consumer_offset, STORE_OFFSET),
    (binary.decode_get_client, (1).to_bytes(4, "little")),
    (binary.decode_delete_segments, bytes.fromhex("020173" "020174" "00000000" "01000000")),
])
def test_a_body_must_be_exactly_its_layout(decode, body):
    decode(memoryview(body))
    for bad in (body[:-2], body + b"\x00"):     # (the ack byte of a store is optional)
        with pytest.raises(InvalidCommand):
            decode(memoryview(bad))


def test_empty_body_commands_refuse_any_byte():
    for code in EMPTY_BODY:
        decode = COMMANDS[code].decode
        decode(memoryview(b""))
        with pytest.raises(InvalidCommand):
            decode(memoryview(b"\x00"))


def test_the_table_covers_every_command_but_the_snapshot():
    # GetSnapshotFile (11) is known to the protocol and answered FeatureUnavailable.
    assert set(PROTOCOL_COMMANDS) - set(COMMANDS) == {11}
    assert set(COMMANDS) <= set(PROTOCOL_COMMANDS)
