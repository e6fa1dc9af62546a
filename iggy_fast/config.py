"""Server configuration: defaults, then a TOML file, then IGGY_* environment variables, then flags.

The file takes Iggy's server.toml as it is: every key of Iggy's configuration tree is accepted
(the tree of the Iggy source this server follows, plus the keys of the last Iggy server release,
so either's file works). Keys iggy-fast implements take effect (`DEFAULTS` holds them); the other
Iggy keys are accepted and reported once at start as not applied; a key Iggy does not have, or a
value of the wrong kind, stops the server with a one-line `ConfigError`.

An environment variable names a key by its path in upper case joined with underscores, as Iggy
does: `IGGY_TCP_ADDRESS` is `[tcp] address`, `IGGY_TCP_TLS_ENABLED` is `[tcp.tls] enabled`,
`IGGY_SYSTEM_SEGMENT_SIZE` is `[system.segment] size`. Like Iggy, an `IGGY_*` variable that names
no key is reported and ignored (other Iggy tools, such as the CLI, read `IGGY_*` variables too),
and an empty one is ignored. Sizes accept "1 GiB"-style strings and durations "7 days"-style ones.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from typing import Any, NamedTuple

NEVER = 2**64 - 1


class ConfigError(ValueError):
    """A configuration the server cannot start with; the message is one line for the user."""


# Kinds of values, checked (and booleans and integers normalised) before the server starts.
BOOL, INT, SIZE, DURATION, TEXT, ADDRESS, LIST, ANY = (
    "boolean", "integer", "size", "duration", "text", "address", "list", "any")

_TLS = {"enabled": BOOL, "self_signed": BOOL, "cert_file": TEXT, "key_file": TEXT}
_SOCKET = {"override_defaults": BOOL, "recv_buffer_size": SIZE, "send_buffer_size": SIZE,
           "keepalive": BOOL}

# Iggy's configuration tree: the sections and keys of its server config (core/server/config.toml
# and core/configs at the commit PROTOCOL.md follows, and server 0.8.0's config.toml). Arrays of
# tables (cluster nodes, JWT issuers) and the 0.8 `[cluster.node]` table are taken whole (ANY).
IGGY_KEYS: dict[str, Any] = {
    "consumer_group": {"rebalancing_timeout": DURATION, "rebalancing_check_interval": DURATION},
    "data_maintenance": {"messages": {"cleaner_enabled": BOOL, "interval": DURATION}},
    "http": {
        "enabled": BOOL, "address": ADDRESS, "max_request_size": SIZE, "web_ui": BOOL,
        "cors": {"enabled": BOOL, "allowed_methods": LIST, "allowed_origins": LIST,
                 "allowed_headers": LIST, "exposed_headers": LIST, "allow_credentials": BOOL,
                 "allow_private_network": BOOL},
        "jwt": {"algorithm": TEXT, "issuer": TEXT, "audience": TEXT, "valid_issuers": LIST,
                "valid_audiences": LIST, "access_token_expiry": DURATION,
                "clock_skew": DURATION, "not_before": DURATION, "encoding_secret": TEXT,
                "decoding_secret": TEXT, "use_base64_secret": BOOL, "trusted_issuers": ANY},
        "metrics": {"enabled": BOOL, "endpoint": TEXT},
        "tls": {"enabled": BOOL, "cert_file": TEXT, "key_file": TEXT},
    },
    "tcp": {
        "enabled": BOOL, "address": ADDRESS, "ipv6": BOOL, "socket_migration": BOOL,
        "tls": _TLS,
        "socket": {**_SOCKET, "nodelay": BOOL, "linger": DURATION},
    },
    "quic": {
        "enabled": BOOL, "address": ADDRESS, "max_concurrent_bidi_streams": INT,
        "datagram_send_buffer_size": SIZE, "initial_mtu": SIZE, "send_window": SIZE,
        "receive_window": SIZE, "stream_receive_window": SIZE,
        "keep_alive_interval": DURATION, "max_idle_timeout": DURATION,
        "certificate": {"self_signed": BOOL, "cert_file": TEXT, "key_file": TEXT},
        "socket": _SOCKET,
    },
    "websocket": {
        "enabled": BOOL, "address": ADDRESS, "read_buffer_size": SIZE, "write_buffer_size": SIZE,
        "max_write_buffer_size": SIZE, "max_message_size": SIZE, "max_frame_size": SIZE,
        "accept_unmasked_frames": BOOL, "tls": _TLS,
    },
    "message_saver": {"enabled": BOOL, "enforce_fsync": BOOL, "interval": DURATION},
    "personal_access_token": {"max_tokens_per_user": INT,
                              "cleaner": {"enabled": BOOL, "interval": DURATION}},
    "heartbeat": {"enabled": BOOL, "interval": DURATION},
    "telemetry": {"enabled": BOOL, "service_name": TEXT,
                  "logs": {"transport": TEXT, "endpoint": TEXT},
                  "traces": {"transport": TEXT, "endpoint": TEXT}},
    "system": {
        "path": TEXT,
        "backup": {"path": TEXT, "compatibility": {"path": TEXT}},
        "state": {"enforce_fsync": BOOL, "max_file_operation_retries": INT,
                  "retry_delay": DURATION},
        "runtime": {"path": TEXT},
        "logging": {"path": TEXT, "level": TEXT, "file_enabled": BOOL, "max_file_size": SIZE,
                    "max_total_size": SIZE, "rotation_check_interval": DURATION,
                    "retention": DURATION, "sysinfo_print_interval": DURATION},
        "encryption": {"enabled": BOOL, "key": TEXT},
        "compression": {"allow_override": BOOL, "default_algorithm": TEXT},
        "stream": {"path": TEXT},
        "topic": {"path": TEXT, "max_size": SIZE, "message_expiry": DURATION},
        "partition": {"path": TEXT, "enforce_fsync": BOOL, "validate_checksum": BOOL,
                      "messages_required_to_save": INT,
                      "size_of_messages_required_to_save": SIZE},
        "segment": {"size": SIZE, "archive_expired": BOOL, "cache_indexes": TEXT},
        "message_deduplication": {"enabled": BOOL, "max_entries": INT, "expiry": DURATION},
        "recovery": {"recreate_missing_state": BOOL},
        "memory_pool": {"enabled": BOOL, "size": SIZE, "bucket_capacity": INT},
        "sharding": {"cpu_allocation": TEXT, "pin_cores": BOOL, "inbox_capacity": INT,
                     "reply_inbox_capacity": INT, "shutdown_drain_timeout": DURATION,
                     "shutdown_poll_interval": DURATION, "shutdown_join_timeout": DURATION,
                     "reconcile_periodic_interval": DURATION},
    },
    "cluster": {
        "enabled": BOOL, "name": TEXT, "heartbeat_timeout": DURATION,
        "commit_broadcast_interval": DURATION, "prepare_retransmit_interval": DURATION,
        "view_change_retransmit_interval": DURATION, "view_change_status_timeout": DURATION,
        "request_start_view_retransmit_interval": DURATION, "view_probe_attempts_max": INT,
        "repair_retry_interval": DURATION, "repair_chunk_max": INT,
        "superblock_wedged_fatal_timeout": DURATION, "nodes": ANY, "node": ANY,
        "auth": {"enabled": BOOL, "shared_secret": TEXT, "previous_shared_secret": TEXT},
        "tls": {**_TLS, "ca_file": TEXT},
        "coordinator": {"skip_shard_zero_for_replicas": BOOL, "skip_shard_zero_for_clients": BOOL},
    },
    "metadata": {"prepare_queue_depth": INT, "journal_slots": INT, "clients_table_max": INT},
    "partition": {"prepare_queue_depth": INT, "evicted_ring_capacity": INT,
                  "evicted_ring_bytes_max": SIZE, "transfer_served_cache_bytes_max": SIZE,
                  "transfer_artifact_bytes_max": SIZE},
    "message_bus": {"max_batch": INT, "max_message_size": SIZE, "peer_queue_capacity": INT,
                    "reconnect_period": DURATION, "close_peer_timeout": DURATION,
                    "close_grace": DURATION, "handshake_grace": DURATION},
}

# Keys iggy-fast adds to Iggy's tree. The root credentials come from IGGY_ROOT_USERNAME /
# IGGY_ROOT_PASSWORD and the flags, as in Iggy, and are kept here.
OWN_KEYS: dict[str, Any] = {
    "tcp": {"sendfile": BOOL, "quickack": BOOL},
    "system": {"partition": {"sync_interval": DURATION, "max_poll_size": SIZE,
                             "max_open_files": INT}},
    # The replicated cluster coordinated by etcd (server/cluster/).
    "cluster": {"node_name": TEXT, "etcd_endpoints": LIST, "replication_factor": INT,
                "replication_address": ADDRESS, "replica_lag_max": DURATION,
                "lease_ttl": DURATION, "replica_replace_after": DURATION},
    "root": {"username": TEXT, "password": TEXT},
    "login": {"max_delay": DURATION},
    # Bounds on what one client connection may hold, over every transport (so a section of
    # their own rather than under [tcp]; Iggy has no such keys).
    "connections": {"max_total": INT, "max_per_address": INT, "login_timeout": DURATION,
                    "idle_timeout": DURATION, "max_request_size_before_login": SIZE},
}

# The keys iggy-fast implements, with their defaults.
DEFAULTS: dict[str, Any] = {
    "tcp": {
        "enabled": True,
        "address": "127.0.0.1:8090",
        "sendfile": True,             # polls go from the page cache to the socket directly
        "quickack": True,             # ACK a partly received request at once (Linux)
        "tls": {"enabled": False, "self_signed": True, "cert_file": "", "key_file": ""},
    },
    # QUIC, HTTP and WebSocket are on by default, as in Iggy; each is off with its `enabled`.
    "quic": {
        "enabled": True,
        "address": "127.0.0.1:8080",
        "initial_mtu": "1200 B",
        "max_idle_timeout": "30 s",
        "keep_alive_interval": "10 s",
        "certificate": {"self_signed": True, "cert_file": "", "key_file": ""},
    },
    "http": {
        "enabled": True,
        "address": "127.0.0.1:3000",
        "max_request_size": "2 MB",
        "web_ui": True,
        "cors": {"enabled": True, "allowed_methods": ["GET", "POST", "PUT", "DELETE"],
                 "allowed_origins": ["*"], "allowed_headers": ["content-type", "authorization"],
                 "exposed_headers": [], "allow_credentials": False},
        "jwt": {"algorithm": "HS256", "issuer": "iggy.apache.org",
                "audience": "iggy.apache.org", "valid_issuers": ["iggy.apache.org"],
                "valid_audiences": ["iggy.apache.org"], "access_token_expiry": "1 h",
                "clock_skew": "5 s", "not_before": "0 s", "encoding_secret": "",
                "decoding_secret": "", "use_base64_secret": False},
        "metrics": {"enabled": True, "endpoint": "/metrics"},
        "tls": {"enabled": False, "cert_file": "", "key_file": ""},
    },
    "websocket": {
        "enabled": True,
        "address": "127.0.0.1:8092",
        "max_message_size": "64 MiB",
        "tls": {"enabled": False, "self_signed": True, "cert_file": "", "key_file": ""},
    },
    "heartbeat": {"interval": "30 s"},
    "personal_access_token": {"max_tokens_per_user": 100},
    "data_maintenance": {"messages": {"cleaner_enabled": True, "interval": "1 m"}},
    "system": {
        "path": "local_data",
        "segment": {"size": "1 GiB"},
        "topic": {"message_expiry": "never", "max_size": "unlimited"},
        "partition": {
            # Without enforce_fsync, appends are synced in the background once this many
            # messages or bytes are unsynced, and at least every sync_interval (like Redis'
            # appendfsync everysec): at most about a second of data is at risk on power loss.
            "enforce_fsync": False,
            "messages_required_to_save": 1_000_000,
            "size_of_messages_required_to_save": "256 MiB",
            "sync_interval": "1 s",
            # The most bytes of stored batches one poll reply carries: the count is cut to fit
            # (clients take a partial batch), so a poll for 2^32-1 messages stays bounded.
            "max_poll_size": "16 MiB",
            # Descriptors partition files may hold at once (an LRU closes cold ones); 0: the
            # soft RLIMIT_NOFILE less a reserve for sockets (storage/files.py).
            "max_open_files": 0,
            "validate_checksum": True,
        },
        "state": {"enforce_fsync": False},
    },
    "root": {"username": "iggy", "password": ""},
    "login": {"max_delay": "8 s"},      # the longest a failed-login throttle delays one
    "cluster": {
        "enabled": False,                 # single node, no etcd
        "name": "iggy-cluster",
        "node_name": "iggy-node-1",
        "etcd_endpoints": ["http://127.0.0.1:2379"],
        "replication_factor": 2,
        "replication_address": "127.0.0.1:8095",
        "replica_lag_max": "10 s",
        "lease_ttl": "5 s",
        # Long enough that a restart, an upgrade or a reboot never copies whole logs, short
        # enough that the cluster has its replication factor back well before a second
        # failure is likely.
        "replica_replace_after": "5 m",
    },
    "connections": {
        "max_total": 10_000,
        "max_per_address": 1_000,
        "login_timeout": "10 s",
        "idle_timeout": "5 m",            # the official SDK pings every 5 s
        # A login is at most 1288 bytes with the longest names and no context (the SDK sends
        # none): 256 header + 4 version + 4 x (1 + 255) names and secret + 4 context length.
        "max_request_size_before_login": "2 KiB",
    },
}

# One line per key of DEFAULTS, for the configuration reference (`reference()`, which
# docs/configuration.md is generated from; tests/test_docs.py keeps the two in step).
DESCRIPTIONS: dict[str, str] = {
    "tcp.enabled": "Listen for clients over TCP.",
    "tcp.address": "Host and port the TCP listener binds (`[::1]:8090` for IPv6).",
    "tcp.sendfile": "Send the stored batches of poll replies with sendfile(2), from the page "
                    "cache to the socket (plain TCP; TLS always copies).",
    "tcp.quickack": "ACK a partly received request at once (TCP_QUICKACK), so a client with "
                    "Nagle on never waits for the kernel's 40 ms delayed ACK.",
    "tcp.tls.enabled": "Speak TLS on the TCP listener (TLS 1.2 or newer).",
    "tcp.tls.self_signed": "With TLS on and neither file configured, generate a self-signed "
                           "certificate for localhost once, kept in `<path>/certs/` (0600); "
                           "false: a cert_file is required.",
    "tcp.tls.cert_file": "PEM certificate chain for TLS; a configured file that cannot be read "
                         "stops the server (never replaced by a generated one).",
    "tcp.tls.key_file": "PEM private key for TLS (empty: the key is in cert_file).",
    "quic.enabled": "Listen for clients over QUIC (UDP; always TLS).",
    "quic.address": "Host and port (UDP) the QUIC endpoint binds.",
    "quic.initial_mtu": "Size of the UDP datagrams the server sends, 1200 B to 65527 B. There is "
                        "no path-MTU discovery (aioquic has none), so it holds for the whole "
                        "connection: 1200 B passes any path; 1452 B (the most a 1500 B Ethernet "
                        "path carries, and below the official SDK's 1472 B limit) carries about "
                        "a fifth more per packet.",
    "quic.max_idle_timeout": "A QUIC connection silent this long is closed.",
    "quic.keep_alive_interval": "How often the server pings an idle QUIC connection.",
    "quic.certificate.self_signed": "With neither file configured, generate a self-signed "
                                    "certificate for localhost once, kept in `<path>/certs/`.",
    "quic.certificate.cert_file": "PEM certificate chain for QUIC.",
    "quic.certificate.key_file": "PEM private key for QUIC (empty: the key is in cert_file).",
    "http.enabled": "Listen for clients over HTTP (the REST API, `/metrics`, the dashboard).",
    "http.address": "Host and port the HTTP listener binds.",
    "http.max_request_size": "The largest HTTP request body accepted (413 above it).",
    "http.web_ui": "Serve the web dashboard at `/ui` (on here; off in Iggy, whose web UI is "
                   "a separate program).",
    "http.cors.enabled": "Answer CORS preflights and add CORS headers to replies.",
    "http.cors.allowed_methods": "Methods a cross-origin request may use.",
    "http.cors.allowed_origins": "Origins allowed to call the API (`*`: any; in an `IGGY_*` "
                                "variable, a comma-separated list).",
    "http.cors.allowed_headers": "Request headers a cross-origin request may send.",
    "http.cors.exposed_headers": "Reply headers a cross-origin page may read.",
    "http.cors.allow_credentials": "Allow cross-origin requests with credentials.",
    "http.jwt.algorithm": "Signing algorithm of the access tokens (HS256, HS384, HS512).",
    "http.jwt.issuer": "The `iss` claim of issued tokens.",
    "http.jwt.audience": "The `aud` claim of issued tokens.",
    "http.jwt.valid_issuers": "Issuers accepted when a token is checked (empty: `issuer`).",
    "http.jwt.valid_audiences": "Audiences accepted when a token is checked (empty: "
                                "`audience`).",
    "http.jwt.access_token_expiry": "How long an access token is valid (`never`: about 31 "
                                    "years, as Iggy issues it); a logged-out token is refused "
                                    "until then.",
    "http.jwt.clock_skew": "Leeway allowed when checking a token's times.",
    "http.jwt.not_before": "Delay before an issued token becomes valid.",
    "http.jwt.encoding_secret": "Secret that signs tokens (empty: a random one per start, so "
                                "tokens do not survive a restart).",
    "http.jwt.decoding_secret": "Secret that checks tokens (empty: the encoding secret).",
    "http.jwt.use_base64_secret": "The secrets are base64-encoded.",
    "http.metrics.enabled": "Serve Prometheus metrics at `endpoint` and the rates at "
                            "`/stats/rates` (both authenticated), and keep what only they "
                            "need: request counts and latencies per command, per-second rates; "
                            "false turns that collection off too, as in Iggy.",
    "http.metrics.endpoint": "The path of the metrics endpoint.",
    "http.tls.enabled": "Serve HTTPS instead of HTTP.",
    "http.tls.cert_file": "PEM certificate chain for HTTPS (required when TLS is on).",
    "http.tls.key_file": "PEM private key for HTTPS (empty: the key is in cert_file).",
    "websocket.enabled": "Listen for clients over WebSocket (binary frames, one request per "
                         "message).",
    "websocket.address": "Host and port the WebSocket listener binds.",
    "websocket.max_message_size": "The largest WebSocket message accepted; a larger one "
                                  "closes that connection.",
    "websocket.tls.enabled": "Speak TLS (wss://) on the WebSocket listener.",
    "websocket.tls.self_signed": "With TLS on and neither file configured, generate a "
                                 "self-signed certificate for localhost once.",
    "websocket.tls.cert_file": "PEM certificate chain for WebSocket TLS.",
    "websocket.tls.key_file": "PEM private key for WebSocket TLS (empty: in cert_file).",
    "heartbeat.interval": "A consumer-group member whose connection sends nothing for this "
                          "long leaves its groups (the SDK pings every 5 s).",
    "personal_access_token.max_tokens_per_user": "Personal access tokens one user may hold; "
                                                 "one more is refused with 52.",
    "data_maintenance.messages.cleaner_enabled": "Run retention (message expiry, maximum topic "
                                                 "size) in the background.",
    "data_maintenance.messages.interval": "How often retention runs.",
    "system.path": "The data directory: metadata, partitions, segments, certificates.",
    "system.segment.size": "A partition's active segment is sealed and a new one started once "
                           "it reaches this size (the topic option `segment_size` overrides).",
    "system.topic.message_expiry": "Default age after which sealed segments are deleted, for "
                                   "topics that do not set `message_expiry`.",
    "system.topic.max_size": "Default size above which a topic's oldest sealed segments are "
                             "deleted, for topics that do not set `max_topic_size`.",
    "system.partition.enforce_fsync": "Default for topics: acknowledge a send only after "
                                      "fdatasync (concurrent sends share one sync).",
    "system.partition.messages_required_to_save": "Without enforce_fsync: unsynced messages "
                                                  "that trigger a background sync.",
    "system.partition.size_of_messages_required_to_save": "Without enforce_fsync: unsynced "
                                                          "bytes that trigger a background "
                                                          "sync.",
    "system.partition.max_poll_size": "The most bytes of stored batches one poll reply carries; "
                                      "the message count is cut to fit (one batch at least).",
    "system.partition.max_open_files": "The most descriptors partition files (segments, "
                                       "consumer offsets) hold at once: cold ones are closed, "
                                       "least recently used first, and reopened when needed. "
                                       "0: the open-files limit (RLIMIT_NOFILE) less a quarter "
                                       "of it, at least 256, left for sockets (iggy-fast's own "
                                       "key).",
    "system.partition.sync_interval": "Without enforce_fsync: the longest a partition stays "
                                      "unsynced (iggy-fast's own key).",
    "system.partition.validate_checksum": "Verify every message checksum of a send, and "
                                          "stored batches when first read or recovered (off: "
                                          "only the batch checksum of a send is checked).",
    "system.state.enforce_fsync": "Sync the metadata store on every change (changes to a topic "
                                  "that enforces fsync are always synced).",
    "root.username": "The root user's name, used when the data directory is new.",
    "root.password": "The root user's password on first start (also IGGY_ROOT_PASSWORD); "
                     "empty: random, printed once, unless --with-default-root-credentials.",
    "login.max_delay": "After 5 failed logins within 5 minutes from one address or for one "
                       "username, each further attempt waits for the previous one plus a "
                       "delay doubling from 0.25 s up to this; one that would wait longer is "
                       "refused unchecked. `0 s` turns the throttle off (iggy-fast's own key).",
    "cluster.enabled": "Run as a node of a replicated cluster coordinated by etcd (off: a "
                       "single node with its metadata in SQLite, no etcd).",
    "cluster.name": "The cluster name GetClusterMetadata reports; in cluster mode also the "
                    "etcd key prefix `/iggy/<name>/` every node of the cluster shares.",
    "cluster.node_name": "This node's name in GetClusterMetadata and in etcd; unique in the "
                         "cluster and bound to this node's data directory (iggy-fast's own "
                         "key, as are the cluster keys below).",
    "cluster.etcd_endpoints": "etcd client URLs (as a variable: comma-separated), tried in "
                              "turn.",
    "cluster.replication_factor": "Nodes each partition of a new topic is placed on (the "
                                  "topic option `replication_factor` overrides).",
    "cluster.replication_address": "Host and port where this node serves its peers "
                                   "(followers fetching, forwarded requests).",
    "cluster.replica_lag_max": "A follower this far behind its leader leaves the in-sync "
                               "set.",
    "cluster.lease_ttl": "This node's etcd lease: it is gone from the cluster (and its "
                         "partitions fail over) this long after it stops renewing it.",
    "cluster.replica_replace_after": "A replica whose node has been gone this long (as "
                                     "the controller saw it) is replaced by a live node "
                                     "without a replica of that partition: the new replica "
                                     "copies the log and joins the in-sync set before the "
                                     "old one is dropped. `0 s` or `never`: never (replace "
                                     "by hand with `iggy-fast cluster rebalance`).",
    "connections.max_total": "Client connections open at once, over all transports; one "
                             "more is closed at once and logged (0: no limit; iggy-fast's own "
                             "key, as is all of `[connections]`).",
    "connections.max_per_address": "Client connections open at once from one IP address; one "
                                   "more is closed at once and logged (0: no limit).",
    "connections.login_timeout": "A connection not logged in this long after connecting (or "
                                 "after logging out) is closed (0 or `never`: no deadline).",
    "connections.idle_timeout": "A connection that sends no request (pings count) for this "
                                "long is closed; the official SDK pings every 5 s "
                                "(0 or `never`: no limit).",
    "connections.max_request_size_before_login": "The largest request frame (header "
                                                 "included) accepted before a login; a larger "
                                                 "one closes the connection. A login with the "
                                                 "longest names and no context is 1288 bytes. "
                                                 "After login frames may reach 64 MiB (a "
                                                 "larger value here counts as 64 MiB).",
}


def _leaves(tree: dict, prefix: tuple = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def reference() -> str:
    """docs/configuration.md: every key of DEFAULTS with its default, kind, variable and
    description. Raises KeyError for a key without a description."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m iggy_fast.config --reference > docs/configuration.md`"
        " from DEFAULTS and DESCRIPTIONS in iggy_fast/config.py; do not edit by hand. -->",
        "",
        "Defaults, then a TOML file (`--config server.toml` or `IGGY_CONFIG_PATH`), then the "
        "`IGGY_*` environment variables below, then the flags `--data-dir` (`system.path`) and "
        "`--tcp-address` (`tcp.address`). The file uses Iggy's `server.toml` layout: the key "
        "`system.segment.size` is `size` under `[system.segment]`.",
        "",
        "Sizes take a number of bytes or a string such as `\"512 MiB\"` or `\"1 GB\"` "
        "(`\"unlimited\"` for no limit); durations take microseconds or a string such as "
        "`\"30 s\"`, `\"7 days\"` or `\"1m 30s\"` (`\"never\"`); booleans take "
        "`true`/`false` (and, in variables, `1`/`0`, `yes`/`no`, `on`/`off`).",
        "",
        "Every other key of Iggy's configuration is accepted and listed at start as not "
        "applied; a key Iggy does not have, or a value of the wrong kind, stops the server "
        "with one line naming it (exit code 2).",
    ]
    section = None
    for path, default in _leaves(DEFAULTS):
        if path[:-1] != section:
            section = path[:-1]
            lines += ["", f"## [{'.'.join(section)}]", "",
                      "| key | default | kind | variable | description |",
                      "|---|---|---|---|---|"]
        kind: Any = SCHEMA
        for key in path:
            kind = kind[key]
        shown = "`\"\"`" if default == "" else (
            f"`{str(default).lower()}`" if isinstance(default, bool) else f"`{default}`")
        lines.append(f"| `{path[-1]}` | {shown} | {kind} | `IGGY_{'_'.join(path).upper()}` | "
                     f"{DESCRIPTIONS['.'.join(path)]} |")
    return "\n".join(lines) + "\n"


# The transports, by config section, with their names in messages.
TRANSPORTS = {"tcp": "TCP", "quic": "QUIC", "http": "HTTP", "websocket": "WebSocket"}

# Iggy reads the root credentials from these two, outside the config tree.
_ROOT_ENV = {"IGGY_ROOT_USERNAME": ("root", "username"), "IGGY_ROOT_PASSWORD": ("root", "password")}

# IGGY_* variables that are not configuration keys, in Iggy (its config file path, test and CI
# knobs) or here (IGGY_FAST_* build switches such as IGGY_FAST_DEBUG): never reported.
_NOT_KEYS = {"IGGY_CONFIG_PATH", "IGGY_CI_BUILD", "IGGY_SHARD_RUNTIME_CAPACITY",
             "IGGY_CONNECTORS_CONFIG_PATH", "IGGY_MCP_CONFIG_PATH"}
_NOT_KEY_PREFIXES = ("IGGY_FAST_", "IGGY_TEST_", "IGGY_CONNECTORS_")

_SIZE_UNITS = {
    "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_TIME_UNITS = {
    "us": 1, "ms": 1000, "s": 1_000_000, "sec": 1_000_000, "secs": 1_000_000,
    "m": 60_000_000, "min": 60_000_000, "mins": 60_000_000,
    "h": 3_600_000_000, "hour": 3_600_000_000, "hours": 3_600_000_000,
    "d": 86_400_000_000, "day": 86_400_000_000, "days": 86_400_000_000,
}
_TERM = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")


def parse_size(value: Any) -> int:
    """Bytes from an int or a string like "1 GiB", "100MB"; "unlimited" is u64::MAX."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text in ("unlimited", "none", "never"):
        return NEVER
    m = _TERM.fullmatch(text)
    if not m or (m.group(2) or "b") not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2) or "b"])


def parse_duration_us(value: Any) -> int:
    """Microseconds from an int (µs) or a string like "7 days", "1m 30s"; "never" is u64::MAX."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text in ("never", "unlimited", "none"):
        return NEVER
    total, pos = 0, 0
    for m in _TERM.finditer(text):
        if m.start() != pos or m.group(2) not in _TIME_UNITS:
            raise ValueError(f"not a duration: {value!r}")
        total += int(float(m.group(1)) * _TIME_UNITS[m.group(2)])
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"not a duration: {value!r}")
    return total


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = _deep_merge(out[key], value) if isinstance(out.get(key), dict) else value
    return out


SCHEMA = _deep_merge(IGGY_KEYS, OWN_KEYS)


def _normalise(kind: str, value: Any) -> Any:
    """The value to keep for a key of this kind; ValueError when it is not one."""
    if kind == BOOL:
        return parse_bool(value)
    if kind == INT:
        if isinstance(value, bool) or not re.fullmatch(r"\s*\d[\d_]*\s*", str(value)):
            raise ValueError(f"not an integer: {value!r}")
        return int(str(value).replace("_", ""))
    if kind == SIZE:
        parse_size(value)
    elif kind == DURATION:
        parse_duration_us(value)
    elif kind == ADDRESS:
        split_address(value)
    elif kind == TEXT and not isinstance(value, str):
        raise ValueError(f"not a string: {value!r}")
    elif kind == LIST and not isinstance(value, (list, str)):
        raise ValueError(f"not a list: {value!r}")
    elif kind == LIST and isinstance(value, str):     # a variable: comma-separated
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Loaded(NamedTuple):
    config: dict             # the effective configuration of the keys iggy-fast implements
    not_applied: list[str]   # Iggy keys that were set but this version does not implement
    unknown_env: list[str]   # IGGY_* variables that name no key (ignored, as Iggy does)


class _Builder:
    def __init__(self):
        self.cfg = copy.deepcopy(DEFAULTS)
        self.not_applied: set[str] = set()

    def set(self, path: list[str], value: Any, where: str) -> None:
        """Check one key's value and apply it when the key is implemented."""
        schema: Any = SCHEMA
        for i, key in enumerate(path):
            if schema == ANY:
                break
            if not isinstance(schema, dict) or key not in schema:
                raise ConfigError(f"{where}: {'.'.join(path[:i + 1])} is not an Iggy "
                                  "configuration key")
            schema = schema[key]
        dotted = ".".join(path)
        if isinstance(schema, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {dotted} is a section, not a value")
            for key, inner in value.items():
                self.set([*path, key], inner, where)
            return
        if isinstance(value, dict) and schema != ANY:
            raise ConfigError(f"{where}: {dotted} is a value, not a section")
        try:
            value = _normalise(schema, value)
        except ValueError as e:
            raise ConfigError(f"{where}: {dotted}: {e}") from None
        node = self.cfg
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node:
            node[path[-1]] = value
        else:
            self.not_applied.add(dotted)


def _env_path(tree: dict, parts: list[str]) -> list[str] | None:
    """Match IGGY_A_B_C against the tree, where a key may itself contain underscores."""
    if not parts:
        return None
    for take in range(len(parts), 0, -1):
        key = "_".join(parts[:take]).lower()
        if key not in tree:
            continue
        if isinstance(tree[key], dict):
            rest = _env_path(tree[key], parts[take:])
            if rest is not None:
                return [key, *rest]
        elif take == len(parts):
            return [key]
        elif tree[key] == ANY:     # inside an array of tables: IGGY_CLUSTER_NODES_0_NAME
            return [key, *(p.lower() for p in parts[take:])]
    return None


def read_config(path: str | None = None, environ: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> Loaded:
    """The effective configuration, defaults < TOML file < environment < overrides (flags).

    Raises ConfigError (one line) for a key Iggy does not have, a value of the wrong kind, an
    unreadable file, or a configuration with nothing to listen on.
    """
    env = os.environ if environ is None else environ
    build = _Builder()
    path = path or env.get("IGGY_CONFIG_PATH") or None
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        for key, value in data.items():
            build.set([key], value, path)
    unknown = []
    for name, value in sorted(env.items()):
        if not name.startswith("IGGY_") or value == "":
            continue
        if name in _ROOT_ENV:
            build.set(list(_ROOT_ENV[name]), value, name)
            continue
        route = _env_path(SCHEMA, name[5:].split("_"))
        if route is None:
            if name not in _NOT_KEYS and not name.startswith(_NOT_KEY_PREFIXES):
                unknown.append(name)
            continue
        build.set(route, value, f"{name}={value}")
    for key, value in (overrides or {}).items():
        build.set([key], value, "command line")
    cfg = build.cfg
    if not any(cfg[key]["enabled"] for key in TRANSPORTS):
        raise ConfigError("nothing to listen on: every transport is disabled (tcp.enabled, "
                          "quic.enabled, http.enabled, websocket.enabled)")
    return Loaded(cfg, sorted(build.not_applied), unknown)


def load_config(path: str | None = None, environ: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The effective configuration (see read_config)."""
    return read_config(path, environ, overrides).config


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of "host:port" or "[v6]:port"; ValueError when it is not one."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"not a host:port address: {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--reference"]:
        sys.exit("usage: python -m iggy_fast.config --reference > docs/configuration.md")
    sys.stdout.write(reference())
