"""Message storage: a partition's log (log.py), when it reaches the disk (durability.py), and
retention (retention.py). What can block on the disk runs off the event loop, on the sync
worker thread or in an executor."""
