"""phxq.replication -- the runtime that runs Multi-Paxos over the PLog and the network for any
replicated state machine (DESIGN §2). The store and the lock service are two state machines on
it; neither imports the other.

Modules (each one's docstring is its contract):

- ``machine``: the ``StateMachine`` / ``Machines`` protocols and ``apply_instance``, the one
  pure apply used live, in rebuilds and when recovery replays the log;
- ``replica``: ``GroupReplica`` executes the sans-I/O core's effects for one group (persist,
  send, apply-then-write) -- nothing else;
- ``proposals``: the one waiter table (a single proposal is a batch of one);
- ``snapshot`` (file format) and ``snapshots``: loading, building, sending, decoding;
- ``host``: ``PaxosHost``, every group of one node: storage, peers, the tick loop;
- ``membership`` and ``rejoin``: may this data directory vote; rebuilding a replica that
  forgot what it voted for (a replaced disk, a damaged log);
- ``storage`` (``GroupStorage``, ``PlogStorage``) and ``peers`` (``Peers``, ``RpcPeers``): the
  runtime's only links to disk and network, swappable (the runtime simulation in ``tests/sim``
  runs the same code over an in-memory log and network under a virtual clock);
- ``daemon``: ``ReplicatedDaemon``, the skeleton of the store and lock daemons.

Every task the runtime starts is owned by a ``phxq.tasks.TaskScope``.
"""
