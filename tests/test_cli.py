"""The admin CLI and `iggy-fast top`, run as a user runs them: `python -m iggy_fast.cli ...` in a
subprocess against a live server, reading what they print (`--output json` for the checks,
the tables once to see that people get one).

Each test runs with its own `IGGY_FAST_HOME` (no contexts file of the machine's) and an
environment without IGGY_* variables, so credentials come only from where the test puts them.
What a command changed is checked through another command or the official SDK, not only
through its own answer.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from iggy_fast.testing import ServerProcess

ROOT = ("-u", "iggy", "-p", "iggy")


@pytest.fixture
def home(tmp_path):
    return str(tmp_path / "home")


def run(*args, home: str, env=None, input: str | None = None, timeout: float = 60):
    """`iggy-fast ARGS` as a subprocess: (exit code, stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IGGY_")}
    environ.update(IGGY_FAST_HOME=home, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "iggy_fast.cli", *args], env=environ,
                          input=input or "", capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def cli(server, home):
    """`cli(*args)` runs a command against the module's server as root and returns its JSON
    answer; `cli.fails(*args)` expects exit code 1 and returns the error line."""
    class Cli:
        def __call__(self, *args, input=None):
            rc, out, err = run(*args, "--address", server.address, *ROOT, "--output", "json",
                               home=home, input=input)
            assert rc == 0, f"exit {rc}: {err}"
            return json.loads(out)

        def fails(self, *args):
            rc, out, err = run(*args, "--address", server.address, *ROOT, home=home)
            assert rc == 1, (rc, out, err)
            assert err.startswith("iggy-fast: error: ") and err.count("\n") == 1, err
            return err
    return Cli()


@pytest.fixture
def topic(cli, unique):
    """A fresh stream with a 3-partition topic: (stream name, topic name)."""
    stream, name = unique("s"), unique("t")
    cli("stream", "create", stream)
    cli("topic", "create", stream, name, "3")
    return stream, name


# -- the command itself -------------------------------------------------------------------------

def test_version(home):
    from iggy_fast import __version__
    rc, out, _ = run("--version", home=home)
    assert rc == 0 and out.strip() == f"iggy-fast {__version__}"


def test_log_level_after_server(tmp_path):
    """`iggy-fast server --log-level debug` is taken (the option used to exist only before
    `server`): a connection's close, logged at DEBUG, reaches the log."""
    srv = ServerProcess(tmp_path / "data", args=["--log-level", "debug"]).start()
    try:
        import socket
        socket.create_connection(("127.0.0.1", srv.tcp_port)).close()
        deadline = time.monotonic() + 20
        while "DEBUG" not in srv.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "DEBUG" in srv.log(), srv.log()
    finally:
        assert srv.stop() == 0


def test_ping_needs_no_login(server, home):
    rc, out, _ = run("ping", "--address", server.address, "-c", "3", "--output", "json",
                     home=home)
    assert rc == 0
    answer = json.loads(out)
    assert answer["count"] == 3 and all(t > 0 for t in answer["times_ms"])


def test_unreachable_server_is_one_line(home):
    from iggy_fast.testing import free_port
    rc, _, err = run("ping", "--address", f"127.0.0.1:{free_port()}", "--timeout", "2",
                     home=home)
    assert rc == 1 and err.startswith("iggy-fast: error: ") and err.count("\n") == 1, err


# -- system ---------------------------------------------------------------------------------------

def test_stats(cli, topic):
    stats = cli("stats")
    assert stats["streams_count"] >= 1 and stats["partitions_count"] >= 3
    assert stats["server_version"] and stats["process_id"] > 0


def test_me(cli):
    me = cli("me")
    assert me["user_id"] == 0 and me["transport"] == "TCP"


def test_options(cli):
    catalog = {o["key"]: o["default"] for o in cli("options", "topic")}
    assert "message_expiry" in catalog and "compression_algorithm" in catalog
    assert cli("options", "user") == []


def test_client_list_and_get(cli, server):
    # A command's own connection ends with it: a client that stays is the SDK's.
    from iggy_fast.client.blocking import SyncIggyClient
    with SyncIggyClient(f"iggy://iggy:iggy@{server.address}") as other:
        other_id = other.get_me().client_id
        assert other_id in [c["client_id"] for c in cli("client", "list")]
        got = cli("client", "get", str(other_id))
        assert (got["client_id"], got["user_id"], got["transport"]) == (other_id, 0, "TCP")
    assert "not found" in cli.fails("client", "get", "4000000000")


# -- streams ----------------------------------------------------------------------------------

def test_stream_create_list_get(cli, unique):
    name = unique("s")
    created = cli("stream", "create", name)
    assert created["name"] == name and created["topics_count"] == 0
    assert name in [s["name"] for s in cli("stream", "list")]
    got = cli("stream", "get", str(created["id"]))
    assert got["name"] == name and got["topics"] == []


def test_stream_update(cli, unique):
    name, renamed = unique("s"), unique("s")
    cli("stream", "create", name)
    cli("stream", "update", name, renamed)
    assert cli("stream", "get", renamed)["name"] == renamed
    assert "not found" in cli.fails("stream", "get", name)


def test_stream_delete(cli, unique):
    name = unique("s")
    cli("stream", "create", name)
    assert cli("stream", "delete", name)["deleted"] is True
    assert name not in [s["name"] for s in cli("stream", "list")]
    assert "Iggy error 1009" in cli.fails("stream", "delete", name)


def test_stream_purge(cli, topic):
    stream, name = topic
    cli("message", "send", stream, name, "a", "b", "--partition-id", "0")
    assert cli("stream", "get", stream)["messages_count"] == 2
    cli("stream", "purge", stream)
    assert cli("stream", "get", stream)["messages_count"] == 0


# -- topics -----------------------------------------------------------------------------------

def test_topic_create_with_settings(cli, unique):
    stream, name = unique("s"), unique("t")
    cli("stream", "create", stream)
    created = cli("topic", "create", stream, name, "2", "--compression", "gzip",
                  "--message-expiry", "1h 30m", "--max-topic-size", "2GiB",
                  "--set", "segment_size=1GiB")
    assert created["partitions_count"] == 2
    assert created["message_expiry"] == 5_400_000_000
    assert created["max_topic_size"] == 2 * 1024**3 and created["compression_algorithm"] == 2
    assert created["options"]["compression_algorithm"] == "gzip"
    assert created["options"]["segment_size"] == 1024**3      # typed, as the catalog says
    got = cli("topic", "get", stream, name)
    assert [p["id"] for p in got["partitions"]] == [0, 1]
    assert got["message_expiry"] == 5_400_000_000


def test_topic_list(cli, topic):
    stream, name = topic
    topics = cli("topic", "list", stream)
    assert [(t["name"], t["partitions_count"]) for t in topics] == [(name, 3)]


def test_topic_update(cli, topic, unique):
    stream, name = topic
    renamed = unique("t")
    cli("topic", "update", stream, name, renamed, "--message-expiry", "never")
    got = cli("topic", "get", stream, renamed)
    assert got["message_expiry"] == (1 << 64) - 1
    # No name: only the settings change.
    cli("topic", "update", stream, renamed, "--message-expiry", "10m")
    got = cli("topic", "get", stream, renamed)
    assert got["name"] == renamed and got["message_expiry"] == 600_000_000


def test_topic_delete(cli, topic):
    stream, name = topic
    cli("topic", "delete", stream, name)
    assert cli("topic", "list", stream) == []


def test_topic_purge(cli, topic):
    stream, name = topic
    cli("message", "send", stream, name, "x", "--partition-id", "2")
    cli("topic", "purge", stream, name)
    assert cli("topic", "get", stream, name)["messages_count"] == 0


def test_bad_duration_is_a_usage_error(server, home):
    rc, _, err = run("topic", "create", "s", "t", "1", "--message-expiry", "soon",
                     "--address", server.address, *ROOT, home=home)
    assert rc == 2 and "expiry" in err


# -- partitions and segments ------------------------------------------------------------------

def test_partition_create_and_delete(cli, topic):
    stream, name = topic
    cli("partition", "create", stream, name, "2")
    assert cli("topic", "get", stream, name)["partitions_count"] == 5
    cli("partition", "delete", stream, name, "4")
    assert [p["id"] for p in cli("topic", "get", stream, name)["partitions"]] == [0]


def test_segment_delete(cli, topic):
    stream, name = topic
    cli("message", "send", stream, name, "x", "--partition-id", "0")
    answer = cli("segment", "delete", stream, name, "0", "1")
    assert answer["deleted"] == 1
    assert cli("topic", "get", stream, name)["partitions"][0]["segments_count"] >= 1


# -- users --------------------------------------------------------------------------------------

def test_user_create_with_permissions(cli, unique, server, home):
    name = unique("u")[:20]
    created = cli("user", "create", name, "secret123", "-g", "r_str,poll_messages",
                  "-s", "7:read_stream#2:s_msg,p_msg")
    assert created["username"] == name and created["status"] == 1
    perms = cli("user", "get", name)["permissions"]
    assert perms["global"]["read_streams"] and perms["global"]["poll_messages"]
    assert not perms["global"]["manage_users"]
    assert perms["streams"]["7"]["read_stream"]
    assert perms["streams"]["7"]["topics"]["2"] == {"manage_topic": False, "read_topic": False,
                                                    "poll_messages": True,
                                                    "send_messages": True}
    # The new user logs in with the flags, and is who `me` says.
    rc, out, err = run("me", "--address", server.address, "-u", name, "-p", "secret123",
                       "--output", "json", home=home)
    assert rc == 0, err
    assert json.loads(out)["user_id"] == created["id"]


def test_user_list(cli):
    assert "iggy" in [u["username"] for u in cli("user", "list")]


def test_user_update(cli, unique):
    name, renamed = unique("u")[:20], unique("u")[:20]
    cli("user", "create", name, "secret123")
    cli("user", "update", name, "--name", renamed, "--status", "inactive")
    got = cli("user", "get", renamed)
    assert got["username"] == renamed and got["status"] == 2
    assert "nothing to change" in cli.fails("user", "update", renamed)


def test_user_password(cli, unique, server, home):
    name = unique("u")[:20]
    cli("user", "create", name, "secret123")
    cli("user", "password", name, "secret123", "changed456")
    rc, _, _ = run("me", "--address", server.address, "-u", name, "-p", "changed456",
                   home=home)
    assert rc == 0
    rc, _, err = run("me", "--address", server.address, "-u", name, "-p", "secret123",
                     home=home)
    assert rc == 1 and err.count("\n") == 1


def test_user_permissions(cli, unique):
    name = unique("u")[:20]
    cli("user", "create", name, "secret123")
    cli("user", "permissions", name, "-g", "manage_topics")
    perms = cli("user", "get", name)["permissions"]["global"]
    assert perms["manage_topics"] and not perms["read_streams"]
    assert "unknown global permission" in cli.fails("user", "permissions", name, "-g", "fly")


def test_user_delete(cli, unique):
    name = unique("u")[:20]
    cli("user", "create", name, "secret123")
    cli("user", "delete", name)
    assert name not in [u["username"] for u in cli("user", "list")]


# -- personal access tokens ------------------------------------------------------------------

def test_pat_create_prints_a_token_that_logs_in(server, home, unique):
    name = unique("p")[:20]
    rc, out, err = run("pat", "create", name, "--expiry", "1h", "--address", server.address,
                       *ROOT, home=home)
    assert rc == 0, err
    token = out.strip()
    assert token and "\n" not in token
    rc, out, err = run("me", "--address", server.address, f"--token={token.strip()}",
                       "--output", "json",
                       home=home)
    assert rc == 0, err
    assert json.loads(out)["user_id"] == 0


def test_pat_list_and_delete(cli, unique):
    name, forever = unique("p")[:20], unique("p")[:20]
    assert cli("pat", "create", name, "--expiry", "1d")["token"]
    cli("pat", "create", forever, "--expiry", "never")
    tokens = {t["name"]: t["expiry_at"] for t in cli("pat", "list")}
    now_us = time.time() * 1e6
    assert 0.9 * 86_400e6 < tokens[name] - now_us < 1.1 * 86_400e6
    assert tokens[forever] is None
    cli("pat", "delete", name)
    assert name not in [t["name"] for t in cli("pat", "list")]


# -- consumer groups and offsets --------------------------------------------------------------

def test_group_create_list_get_delete(cli, topic):
    stream, name = topic
    created = cli("group", "create", stream, name, "billing")
    assert created["name"] == "billing" and created["partitions_count"] == 3
    assert [g["name"] for g in cli("group", "list", stream, name)] == ["billing"]
    got = cli("group", "get", stream, name, "billing")
    assert got["id"] == created["id"] and got["members"] == []
    cli("group", "delete", stream, name, "billing")
    assert cli("group", "list", stream, name) == []


def test_offset_of_a_consumer(cli, topic):
    stream, name = topic
    cli("message", "send", stream, name, "a", "b", "c", "--partition-id", "1")
    cli("offset", "set", "worker", stream, name, "1", "1")
    got = cli("offset", "get", "worker", stream, name, "1")
    assert (got["stored_offset"], got["current_offset"]) == (1, 2)
    cli("offset", "delete", "worker", stream, name, "1")
    assert "not found" in cli.fails("offset", "get", "worker", stream, name, "1")


def test_offset_of_a_group(cli, topic):
    stream, name = topic
    cli("group", "create", stream, name, "billing")
    cli("message", "send", stream, name, "a", "b", "c", "--partition-id", "2")
    cli("offset", "set", "billing", stream, name, "2", "2", "--kind", "group")
    assert cli("offset", "get", "billing", stream, name, "2", "-k", "group")["stored_offset"] == 2
    # Setting it joined the group for the change only.
    assert cli("group", "get", stream, name, "billing")["members"] == []
    cli("offset", "delete", "billing", stream, name, "2", "-k", "group")
    assert "not found" in cli.fails("offset", "get", "billing", stream, name, "2", "-k", "group")


# -- messages ---------------------------------------------------------------------------------

def test_message_send_and_poll(cli, topic):
    stream, name = topic
    sent = cli("message", "send", stream, name, "hello", "world", "--partition-id", "1",
               "-H", "source:string:cli", "-H", "n:uint32:7")
    assert (sent["count"], sent["partition_id"], sent["base_offset"]) == (2, 1, 0)
    polled = cli("message", "poll", stream, name, "1", "--first", "-m", "10", "--show-headers")
    assert polled["count"] == 2
    assert [m["payload"] for m in polled["messages"]] == ["hello", "world"]
    assert polled["messages"][0]["headers"] == {"source": "cli", "n": 7}
    assert [m["offset"] for m in cli("message", "poll", stream, name, "1", "--offset", "1",
                                     "-m", "5")["messages"]] == [1]


def test_message_send_from_stdin_with_a_key(cli, topic):
    stream, name = topic
    sent = cli("message", "send", stream, name, "-m", "customer-7", input="one\ntwo\n\nthree\n")
    assert sent["count"] == 3
    polled = cli("message", "poll", stream, name, str(sent["partition_id"]), "--first",
                 "-m", "10")
    assert [m["payload"] for m in polled["messages"]] == ["one", "two", "three"]


def test_message_poll_next_with_auto_commit(cli, topic):
    stream, name = topic
    cli("message", "send", stream, name, "1", "2", "3", "--partition-id", "0")
    first = cli("message", "poll", stream, name, "0", "-n", "-m", "2", "-a", "-c", "reader")
    second = cli("message", "poll", stream, name, "0", "-m", "2", "-a", "-c", "reader")
    assert [m["payload"] for m in first["messages"]] == ["1", "2"]
    assert [m["payload"] for m in second["messages"]] == ["3"]


def test_message_poll_binary_payload(cli, topic, tmp_path):
    stream, name = topic
    path = tmp_path / "in.txt"
    path.write_bytes(b"\xff\xfe\n")
    cli("message", "send", stream, name, "--input-file", str(path), "--partition-id", "0")
    m = cli("message", "poll", stream, name, "0", "--first")["messages"][0]
    assert m["encoding"] == "base64" and m["payload"] == "//4="


def test_message_flush(cli, topic):
    stream, name = topic
    cli("message", "send", stream, name, "x", "--partition-id", "0")
    assert cli("message", "flush", stream, name, "0", "--fsync")["flushed"] is True


# -- what people see ---------------------------------------------------------------------------

def test_tables_for_people(server, home, topic):
    stream, name = topic
    rc, out, err = run("topic", "list", stream, "--address", server.address, *ROOT, home=home,
                       env={"COLUMNS": "200"})
    assert rc == 0, err
    assert name in out and "partitions" in out and "┃" in out
    rc, out, _ = run("stream", "delete", stream, "--address", server.address, *ROOT, home=home)
    assert rc == 0 and out.strip() == f"Stream {stream} deleted"


def test_a_server_error_is_one_line(cli):
    err = cli.fails("topic", "get", "no-such-stream", "t")
    assert "not found" in err


# -- credentials and contexts ------------------------------------------------------------------

def test_credentials_from_the_environment(server, home):
    rc, out, err = run("me", "--address", server.address, "--output", "json", home=home,
                       env={"IGGY_USERNAME": "iggy", "IGGY_PASSWORD": "iggy"})
    assert rc == 0, err
    assert json.loads(out)["user_id"] == 0


def test_token_from_the_environment(server, home, unique):
    rc, token, err = run("pat", "create", unique("p")[:20], "--address", server.address, *ROOT,
                         home=home)
    assert rc == 0, err
    rc, out, err = run("me", "--address", server.address, "--output", "json", home=home,
                       env={"IGGY_TOKEN": token.strip()})
    assert rc == 0, err


def test_flags_win_over_the_environment(server, home):
    rc, _, err = run("me", "--address", server.address, *ROOT, home=home,
                     env={"IGGY_USERNAME": "iggy", "IGGY_PASSWORD": "wrong-password"})
    assert rc == 0, err


def test_password_read_from_stdin(server, home):
    rc, _, err = run("me", "--address", server.address, "-u", "iggy", home=home, input="iggy\n")
    assert rc == 0, err


def test_no_credentials_says_how_to_give_them(server, home):
    rc, _, err = run("stream", "list", "--address", server.address, home=home)
    assert rc == 1 and "IGGY_USERNAME" in err and err.count("\n") == 1


def test_wrong_password_is_one_line(server, home):
    rc, _, err = run("stream", "list", "--address", server.address, "-u", "iggy", "-p", "nope",
                     home=home)
    assert rc == 1 and err.startswith("iggy-fast: error: ") and err.count("\n") == 1, err


def test_connection_string(server, home):
    rc, out, err = run("me", "--url", f"iggy+tcp://iggy:iggy@{server.address}", "--output",
                       "json", home=home)
    assert rc == 0, err
    assert json.loads(out)["transport"] == "TCP"


def test_options_before_the_action(server, home):
    rc, out, err = run("stream", "--address", server.address, *ROOT, "list", "--output",
                       "json", home=home)
    assert rc == 0, err
    assert isinstance(json.loads(out), list)


def test_contexts(server, home):
    def ctx(*args, **kw):
        rc, out, err = run("context", *args, "--output", "json", home=home, **kw)
        assert rc == 0, err
        return json.loads(out)

    assert ctx("list") == [{"name": "default", "active": True}]
    ctx("create", "local", "--address", server.address, "-u", "iggy", "-p", "iggy")
    path = os.path.join(home, "contexts.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600      # it holds a password
    assert ctx("show", "local") == {"name": "local", "address": server.address,
                                    "username": "iggy", "password": "***"}
    # Not in use yet: the default context has no credentials.
    rc, _, err = run("stream", "list", home=home)
    assert rc == 1 and "no credentials" in err
    assert ctx("use", "local") == {"active": "local"}
    assert {c["name"]: c["active"] for c in ctx("list")} == {"default": False, "local": True}
    rc, out, err = run("me", "--output", "json", home=home)
    assert rc == 0, err
    assert json.loads(out)["user_id"] == 0
    ctx("delete", "local")
    assert ctx("list") == [{"name": "default", "active": True}]


def test_context_chosen_per_command(server, home):
    rc, _, err = run("context", "create", "viaurl", "--url",
                     f"iggy://iggy:iggy@{server.address}", home=home)
    assert rc == 0, err
    rc, out, err = run("me", "--context", "viaurl", "--output", "json", home=home)
    assert rc == 0, err
    rc, _, err = run("me", "--context", "nope", home=home)
    assert rc == 1 and "no context named 'nope'" in err


def test_context_with_a_token(server, home, unique):
    rc, token, err = run("pat", "create", unique("p")[:20], "--address", server.address, *ROOT,
                         home=home)
    assert rc == 0, err
    # `--token=` form: a token may begin with "-", which argparse would take for an option.
    rc, _, err = run("context", "create", "bot", "--address", server.address,
                     f"--token={token.strip()}", home=home)
    assert rc == 0, err
    rc, out, err = run("me", "--context", "bot", "--output", "json", home=home)
    assert rc == 0, err
    assert json.loads(out)["user_id"] == 0


def test_context_errors(home):
    rc, _, err = run("context", "use", "ghost", home=home)
    assert rc == 1 and "no context named" in err
    rc, _, err = run("context", "delete", "default", home=home)
    assert rc == 1 and "cannot be deleted" in err
    rc, _, err = run("context", "create", "bad", "--url", "iggy://nobody-at-all", home=home)
    assert rc == 1 and "credentials" in err and err.count("\n") == 1
    assert not os.path.exists(os.path.join(home, "contexts.json"))


# -- top --------------------------------------------------------------------------------------

def test_top_rates_and_lag(cli, server, home, topic):
    """Produce 1000, a group commits 399 on partition 0 (400 consumed): top shows lag 600; with
    a producer running it shows a positive rate from its second snapshot on."""
    stream, name = topic
    payloads = [str(i) for i in range(100)]
    for _ in range(10):
        cli("message", "send", stream, name, *payloads, "--partition-id", "0")
    cli("group", "create", stream, name, "billing")
    cli("offset", "set", "billing", stream, name, "0", "399", "--kind", "group")

    stop = threading.Event()

    def produce():
        from iggy_fast.client.blocking import SyncIggyClient
        with SyncIggyClient(f"iggy://iggy:iggy@{server.address}") as c:
            while not stop.is_set():
                c.send_messages(stream, name, 1, [b"more"] * 10)
                time.sleep(0.01)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        rc, out, err = run("top", "--iterations", "3", "--interval", "0.5", "--output", "json",
                           "--address", server.address, *ROOT, home=home)
    finally:
        stop.set()
        producer.join()
    assert rc == 0, err
    snapshots = [json.loads(line) for line in out.splitlines()]
    assert len(snapshots) == 3
    rows = [next(r for r in s["topics"] if r["stream"] == stream) for s in snapshots]
    assert rows[0]["messages_per_second"] is None               # no previous snapshot
    assert all(r["messages_per_second"] is not None for r in rows[1:])
    assert max(r["messages_per_second"] for r in rows[1:]) > 0
    group = rows[0]["groups"][0]
    assert group["name"] == "billing" and group["partitions"]["0"] == 600
    assert rows[-1]["messages"] > 1000


def test_top_once_as_a_table(server, home, topic):
    stream, name = topic
    rc, out, err = run("top", "--once", "--address", server.address, *ROOT, home=home,
                       env={"COLUMNS": "200"})
    assert rc == 0, err
    assert "iggy-fast top" in out and name in out and "msg/s" in out


def test_top_watches_only_the_streams_asked_for(cli, server, home, topic, unique):
    stream, name = topic
    other = unique("s")
    cli("stream", "create", other)
    cli("topic", "create", other, "t", "1")
    rc, out, err = run("top", "--once", "--stream", stream, "--output", "json", "--address",
                       server.address, *ROOT, home=home)
    assert rc == 0, err
    assert [(r["stream"], r["topic"]) for r in json.loads(out)["topics"]] == [(stream, name)]


@pytest.mark.timeout(180)      # each readline below waits on top: a hang must fail, not stall
def test_top_says_when_the_server_goes_away_and_comes_back(tmp_path, home):
    srv = ServerProcess(tmp_path / "data").start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "iggy_fast.cli", "top", "--interval", "0.3", "--output", "json",
         "--address", srv.address, *ROOT],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("IGGY_")},
             "IGGY_FAST_HOME": home})
    try:
        assert "topics" in json.loads(proc.stdout.readline())
        srv.stop()
        while "error" not in (line := json.loads(proc.stdout.readline())):
            pass                    # snapshots taken before the server was gone
        assert line["error"]
        srv.start()
        deadline = time.monotonic() + 60
        while "error" in (line := json.loads(proc.stdout.readline())):
            assert time.monotonic() < deadline, "top did not come back with the server"
        assert "topics" in line and line["stats"]["server_version"]
    finally:
        proc.kill()
        proc.wait()
        srv.stop()
    assert "Traceback" not in proc.stderr.read()


@pytest.mark.parametrize("transport, port", [("quic", "quic_port"), ("ws", "websocket_port"),
                                             ("http", "http_port")])
def test_other_transports(server, home, unique, transport, port):
    """`--transport`: the same commands over every transport the SDK client has a link for
    (a transport whose link is not in this build is skipped: the CLI has nothing of its own
    per transport)."""
    from iggy_fast.client.aio import TRANSPORTS
    pytest.importorskip(TRANSPORTS[transport].partition(":")[0])
    where = ("--transport", transport, "--address", f"127.0.0.1:{getattr(server, port)}")
    name = unique("s")
    rc, _, err = run("stream", "create", name, *where, *ROOT, home=home)
    assert rc == 0, err
    rc, out, err = run("stream", "list", *where, *ROOT, "--output", "json", home=home)
    assert rc == 0, err
    assert name in [s["name"] for s in json.loads(out)]
    rc, out, err = run("stream", "get", name, "--address", server.address, *ROOT, "--output",
                       "json", home=home)
    assert rc == 0, err


def test_over_tls_with_the_servers_certificate(tmp_path, home):
    """`--tls --tls-ca-file`: the CLI verifies the server's self-signed certificate."""
    srv = ServerProcess(tmp_path / "tls", env={"IGGY_TCP_TLS_ENABLED": "true"}).start()
    try:
        ca = os.path.join(srv.data_dir, "certs", "iggy_cert.pem")
        rc, out, err = run("me", "--address", srv.address, "--tls", "--tls-ca-file", ca,
                           "--tls-domain", "localhost", *ROOT, "--output", "json", home=home)
        assert rc == 0, err
        assert json.loads(out)["transport"] == "TCP"
        # Without TLS the server does not answer the frames: one line, no traceback.
        rc, _, err = run("me", "--address", srv.address, "--timeout", "3", *ROOT, home=home)
        assert rc == 1 and err.count("\n") == 1, err
    finally:
        srv.stop()


@pytest.mark.timeout(120)
def test_top_live_on_a_terminal(server, home, topic):
    """On a terminal (a pty here) top redraws in place until interrupted."""
    import pty
    import select
    import signal
    stream, name = topic
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "iggy_fast.cli", "top", "--interval", "0.2", "--address",
         server.address, *ROOT], stdin=slave, stdout=slave, stderr=slave, close_fds=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("IGGY_")},
             "IGGY_FAST_HOME": home, "TERM": "xterm", "COLUMNS": "200", "LINES": "50"})
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        # Two frames: the header line twice, the second with a rate column filled.
        while seen.count(b"iggy-fast top") < 2 and time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 65536)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        try:                                    # what it wrote on its way out
            while select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 65536)
        except OSError:                         # EIO: the pty's other end is closed
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = seen.decode(errors="replace")
    assert text.count("iggy-fast top") >= 2 and name in text
    assert "\x1b[" in text                   # drawn with terminal control sequences
    assert "Traceback" not in text


@pytest.mark.timeout(120)
def test_top_drops_a_deleted_stream_without_an_error(cli, server, home, topic):
    stream, name = topic
    proc = subprocess.Popen(
        [sys.executable, "-m", "iggy_fast.cli", "top", "--interval", "0.2", "--output", "json",
         "--address", server.address, *ROOT],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("IGGY_")},
             "IGGY_FAST_HOME": home})
    try:
        first = json.loads(proc.stdout.readline())
        assert stream in [r["stream"] for r in first["topics"]]
        cli("stream", "delete", stream)
        deadline = time.monotonic() + 60
        while True:
            line = json.loads(proc.stdout.readline())
            assert "error" not in line, line
            if stream not in [r["stream"] for r in line["topics"]]:
                break
            assert time.monotonic() < deadline, "the deleted stream stayed in the view"
    finally:
        proc.kill()
        proc.wait()
    assert "Traceback" not in proc.stderr.read()
