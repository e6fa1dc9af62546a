"""Retention: the background task that deletes whole sealed segments, oldest first.

Runs every `data_maintenance.messages.interval`. Per topic, two rules:
* message_expiry: a sealed segment goes once its newest message is older than the expiry;
* max_topic_size: while the topic holds more bytes than the cap, the sealed segment with the
  oldest messages across its partitions goes.
The active segment of a partition is never deleted, so a partition keeps its newest messages
and its offsets. Consumers whose stored offset now points below the first message resume at
the first message still there (see the Next strategy in service/messages.py).
Deleting is cheap on the event loop: a segment's files are unlinked while still open, and the
close that frees their blocks runs in an executor (PartitionLog.delete_oldest_segments).
"""

from __future__ import annotations

import logging

from iggy_fast.config import NEVER, parse_bool, parse_duration_us

log = logging.getLogger("iggy_fast.maintenance")


class Maintenance:
    def __init__(self, server):
        self.server = server
        cfg = server.cfg["data_maintenance"]["messages"]
        if parse_bool(cfg["cleaner_enabled"]):
            server.periodic_tasks.append((parse_duration_us(cfg["interval"]) / 1e6, self.run))

    def run(self, now: int) -> int:
        """Apply retention to every topic; returns how many segments were deleted."""
        deleted = 0
        for stream in list(self.server.state.streams.values()):
            for topic in list(stream.topics.values()):
                deleted += self._expire(topic, now) + self._cap(topic)
        return deleted

    @staticmethod
    def _expire(topic, now: int) -> int:
        expiry = topic.settings["message_expiry"]
        if expiry == NEVER:
            return 0
        deleted = 0
        for partition in topic.partitions.values():
            plog = partition.log
            while (len(plog.segments) > 1 and plog.segments[0].sealed
                   and plog.segments[0].last_timestamp + expiry <= now):
                for name in plog.delete_oldest_segments(1):
                    log.info("retention: %s expired, deleted %s (partition %s)",
                             topic.name, name, partition.key)
                    deleted += 1
        return deleted

    @staticmethod
    def _cap(topic) -> int:
        cap = topic.settings["max_topic_size"]
        if cap == NEVER:
            return 0
        deleted = 0
        while topic.size_bytes > cap:
            candidates = [p for p in topic.partitions.values() if len(p.log.segments) > 1]
            if not candidates:
                break
            oldest = min(candidates, key=lambda p: p.log.segments[0].first_timestamp)
            for name in oldest.log.delete_oldest_segments(1):
                log.info("retention: %s over %d bytes, deleted %s (partition %s)",
                         topic.name, cap, name, oldest.key)
                deleted += 1
        return deleted
