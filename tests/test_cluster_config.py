"""The `[cluster]` keys: off by default, every key also a variable, the etcd endpoints a
comma-separated list there (no etcd needed for these)."""

from __future__ import annotations

from iggy_fast.config import load_config


def test_cluster_mode_is_off_by_default():
    cluster = load_config(environ={})["cluster"]
    assert cluster["enabled"] is False
    assert cluster["replication_factor"] == 2


def test_every_cluster_key_is_a_variable():
    cluster = load_config(environ={
        "IGGY_CLUSTER_ENABLED": "true", "IGGY_CLUSTER_NAME": "prod",
        "IGGY_CLUSTER_NODE_NAME": "node1",
        "IGGY_CLUSTER_ETCD_ENDPOINTS": "http://10.0.0.1:2379, http://10.0.0.2:2379",
        "IGGY_CLUSTER_REPLICATION_FACTOR": "3",
        "IGGY_CLUSTER_REPLICATION_ADDRESS": "127.0.0.1:9090",
        "IGGY_CLUSTER_REPLICA_LAG_MAX": "5 s", "IGGY_CLUSTER_LEASE_TTL": "4 s",
        "IGGY_CLUSTER_REPLICA_REPLACE_AFTER": "never"})["cluster"]
    assert cluster == {"enabled": True, "name": "prod", "node_name": "node1",
                       "etcd_endpoints": ["http://10.0.0.1:2379", "http://10.0.0.2:2379"],
                       "replication_factor": 3, "replication_address": "127.0.0.1:9090",
                       "replica_lag_max": "5 s", "lease_ttl": "4 s",
                       "replica_replace_after": "never"}


def test_a_file_gives_the_endpoints_as_a_list(tmp_path):
    toml = tmp_path / "server.toml"
    toml.write_text('[cluster]\nenabled = true\netcd_endpoints = ["http://a:2379", '
                    '"http://b:2379"]\n')
    assert load_config(str(toml), environ={})["cluster"]["etcd_endpoints"] == [
        "http://a:2379", "http://b:2379"]
