"""When appended messages reach the disk (the fsync policy).

Every append goes to the kernel at once (one write per batch). With `enforce_fsync` on a topic
a send is acknowledged only after fdatasync; otherwise the kernel writes the pages back.
"""

from __future__ import annotations

import errno

from iggy_fast.errors import IggyError


class Durability:
    def __init__(self, server):
        self.server = server

    def append(self, partition, batch, count: int, now: int) -> int:
        try:
            return partition.log.append(batch, count, now)
        except OSError as e:
            code = 6001 if e.errno == errno.ENOSPC else 6000
            raise IggyError.from_code(code, f"append failed: {e}") from None

    def acknowledge(self, partition, reply):
        if partition.topic.settings["enforce_fsync"]:
            partition.log.sync()
        return reply

    def sync_now(self, partition):
        partition.log.sync()
        return None
