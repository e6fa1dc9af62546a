"""The replicated cluster: nodes coordinated by etcd (GitHub issue 12).

* `etcd.py`: the etcd v3 client (its JSON gateway over aiohttp).
* `node.py`: this node in the cluster: its identity (bound to its data directory), its
  registration under a lease, the view of every node, the controller election.
* `controller.py`: what the controller does: places partition replicas on distinct nodes with
  leaders spread, moves leadership off nodes whose lease expired (compare-and-swap under
  the controller's own key, so two controllers can never both win), and moves replicas:
  onto nodes that joined when `iggy-fast cluster rebalance` asks (a request in etcd), and
  off nodes gone longer than `replica_replace_after` (5 minutes by default). A move adds the
  new replica first (it copies the log from the leader and joins the in-sync set once caught
  up) and only then drops the old one, in a compare-and-swap that also hands leadership to
  an in-sync replica (epoch bumped) when the target says so; the dropped replica stops
  fetching and deletes its copy.
* `replication.py`: the data path: followers fetch from leaders, sends acknowledged once the
  in-sync replicas have them, leader epochs and truncation, forwarding to the leader.
* `groups.py`: consumer groups shared by the nodes: each member a key in etcd under its
  node's lease, watched by every node, which all compute the same assignment.
* `cluster.py`: the wiring the server calls; `dev.py`: etcd and nodes as local processes.

Why no acknowledged message is lost when any one node dies: a send is acknowledged only once
every in-sync replica has it, and only an in-sync replica may become leader (when none is
live the partition waits for one rather than electing a replica that may lack acknowledged
messages). A follower that falls behind leaves the in-sync set before sends stop waiting for
it, and one returns only with the whole log and the newest consumer offsets (counting for
acknowledgements from the moment its return is decided), so the set always holds every
acknowledged message and offset. The price is availability: with the
in-sync set down to the leader (its follower dead), the leader's death leaves the partition
without a leader until one of the two returns.

The metadata itself lives in etcd behind the `MetadataStore` interface
(server/metadata/etcd.py). etcd keys, all under `/iggy/<cluster name>/`:

    meta/<key>                       the metadata store's keys (metadata/__init__.py)
    meta/<partition key>/placement   {"replicas", "leader", "epoch", "isr"} per partition
                                     (and "target" while it moves: controller.py)
    cluster/nodes/<name>             a live node's registration, under its lease
    cluster/known/<name>             {"id", "addresses"}: the data directory a name is bound to
    cluster/controller               {"name", "id"}: the controller, under its lease
    cluster/rebalance                {"id", "state"}: `cluster rebalance`'s request, state
                                     "requested", then "moving", then "done"
    cluster/init                     held (under a lease) by the node creating the first
                                     metadata (the format marker, the root user)
    groups/<topic identity>/<group id>/<node>/<client id>
                                     a consumer group member, under its node's lease

Topic options (server/options.py): `replication_factor` (default: the node's) and
`min_in_sync_replicas`: a leader refuses a send (transient_not_accepted, nothing appended)
while the partition's in-sync set is smaller (`Replication.check_in_sync`). GET
/cluster/status on the HTTP transport (transports/http_cluster.py) is `Cluster.status()`.
A partition request for a partition another node leads is forwarded to the leader, from
every transport (an HTTP REST request is encoded to its binary body to travel and its answer
decoded back to JSON), and forwarded again to the next leader while leadership moves, for
about as long as a failover takes; a forwarded send is appended once even then (a retried
send is looked for in the new leader's log first: replication.py, "Forwarding"). Only the
forwarding node's own retries are recognised: a client that sends again itself (having lost
its connection or its patience) stores a second copy, as with a single node.

Consumer groups (cluster/groups.py): a group's members may sit on different nodes and share
its partitions: each partition has one owner cluster-wide, members joining, leaving or dying
with their node rebalance every node's view alike. Membership is in etcd (rare writes); the
group offsets stay with their partition (a write per poll), stored on its leader and copied
with the partition, so a member's group polls and offset requests are forwarded to the
partition's leader, which checks that the member owns the partition. The leader
acknowledges a stored offset only once the in-sync follower has it (replication.py), so a
committed offset survives its leader's death and the group never reads committed messages
again (tests/test_cluster_soak.py, test_cluster_fencing.py).

Not done yet (issue 12): a gap of offsets inside a leader's log (its restart after a
reboot, storage/log.py) stops a follower that reaches it (replication.py, "Where a copy
starts"); a node that has not yet seen a stream's or topic's
deletion may still answer for it for a few milliseconds (a name it does not know makes it
catch up with etcd first); renames are not guarded across nodes (creations are, by the
identity counter).

The official SDK (0.9.0), once GetClusterMetadata lists several nodes, routes its
auto-committing polls (codes 103, 14 and 104: service/routing.py); every node answers that
the SDK should poll on it, and forwards those polls like any other.
"""
