"""Every command with random and truncated bodies, logged in: each request gets exactly one
reply (a status, never silence), no handler crashes (the module's server fixture fails on any
traceback in the server log), and the server keeps serving. Seeded; FUZZ_SEED replays."""

from __future__ import annotations

import os
import random

from iggy_fast import _wire
from iggy_fast.client import BlockingClient
from iggy_fast.protocol.codes import OPERATION_COMMANDS
from iggy_fast.protocol.errors import IggyError
from iggy_fast.server.dispatch import COMMANDS

# Login/logout change the session itself; they have their own tests.
SKIP = {40, 39}
ROUNDS = 150


def test_random_bodies_for_every_command(server):
    seed = int(os.environ.get("FUZZ_SEED", random.randrange(1 << 30)))
    print(f"fuzz seed {seed}")
    rng = random.Random(seed)
    c = BlockingClient(server.address, timeout=10)
    c.login()
    c.call(202, _wire.Writer().name("fz").getvalue())
    c.call(302, _wire.Writer().identifier("fz").u32(2).name("t").getvalue())
    valid_prefix = _wire.Writer().identifier("fz").identifier("t").getvalue()
    answered = 0
    for code in sorted(COMMANDS):
        if code in SKIP:
            continue
        for _ in range(ROUNDS):
            kind = rng.random()
            if kind < 0.4:
                body = rng.randbytes(rng.randint(0, 64))
            elif kind < 0.8:          # plausible identifiers, then garbage
                body = valid_prefix + rng.randbytes(rng.randint(0, 40))
            else:                     # a valid prefix cut anywhere
                body = (valid_prefix + rng.randbytes(20))[:rng.randint(0, 30)]
            try:
                c.call(code, body)
            except IggyError as e:
                assert e.code != 1, f"internal error for command {code} body {body.hex()}"
            answered += 1
            if code in (203, 303):   # deletes may hit our stream/topic: recreate them
                try:
                    c.call(202, _wire.Writer().name("fz").getvalue())
                except IggyError:
                    pass
                try:
                    c.call(302, _wire.Writer().identifier("fz").u32(2).name("t").getvalue())
                except IggyError:
                    pass
    assert answered == ROUNDS * (len(COMMANDS) - len(SKIP))
    c.ping()
    assert set(OPERATION_COMMANDS.values()) - SKIP <= set(COMMANDS)   # every replicated code has a handler
    c.close()
