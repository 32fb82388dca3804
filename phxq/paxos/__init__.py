"""phxq.paxos -- sans-I/O Multi-Paxos (DESIGN.md §3). Pure state machines: messages in, effects
out; no sockets, files, clocks or randomness (time is passed in as ``now``).

Public API (all re-exported here):

- ``Ballot(round, node)``, ``ZERO``; ``GroupConfig``; ``RecoveredState``;
  ``recover_state(records, chosen_up_to, checksum)`` (pure reference fold of durable records).
- ``PaxosNode(config, recovered, now)`` with ``propose(pid, item, now)``,
  ``on_message(msg, now)``, ``on_persisted(token, now)``, ``on_tick(now)`` -> ``list[Effect]``,
  ``next_deadline()``, and read-only ``is_master``, ``master``, ``ready``, ``ballot``,
  ``promised``, ``chosen_up_to``, ``checksum``, ``known_chosen``, ``diverged``, ``role``.
- Effects: ``Send``, ``Persist``, ``PromiseRecord``, ``AcceptRecord``, ``Learned``,
  ``ProposalFailed``, ``ServeCatchup``, ``RoleChanged``, ``Divergence`` (see ``effects``).
- Messages: ``Prepare``, ``Promise``, ``AcceptedEntry``, ``Reject``, ``Accept``, ``Accepted``,
  ``Chosen``, ``Heartbeat``, ``HeartbeatAck``, ``CatchupRequest``, ``CatchupReply``,
  ``ChosenEntry``, ``PreVote``, ``PreVoteReply``; ``encode_message``/``decode_message`` (``ProtocolError`` on bad input).
- ``encode_batch(items)``/``decode_batch(value)`` (``b""`` is the no-op); ``chain_checksum``.
- Tests and benchmarks drive it with ``LoopbackCluster`` (``tools/loopback.py``, a checkout
  helper that ships in no wheel).
"""

from phxq.paxos.ballot import ZERO, Ballot
from phxq.paxos.batch import decode_batch, encode_batch
from phxq.paxos.checksum import chain_checksum
from phxq.paxos.config import GroupConfig, RecoveredState
from phxq.paxos.effects import (
    AcceptRecord,
    Divergence,
    Effect,
    Learned,
    Persist,
    PromiseRecord,
    ProposalFailed,
    RoleChanged,
    Send,
    ServeCatchup,
)
from phxq.paxos.messages import (
    Accept,
    Accepted,
    AcceptedEntry,
    CatchupReply,
    CatchupRequest,
    Chosen,
    ChosenEntry,
    Heartbeat,
    HeartbeatAck,
    Message,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    Reject,
    decode_message,
    encode_message,
)
from phxq.paxos.node import PaxosNode, Role
from phxq.paxos.recovery import recover_state

__all__ = [
    "ZERO",
    "Accept",
    "AcceptRecord",
    "Accepted",
    "AcceptedEntry",
    "Ballot",
    "CatchupReply",
    "CatchupRequest",
    "Chosen",
    "ChosenEntry",
    "Divergence",
    "Effect",
    "GroupConfig",
    "Heartbeat",
    "HeartbeatAck",
    "Learned",
    "Message",
    "PaxosNode",
    "Persist",
    "PreVote",
    "PreVoteReply",
    "Prepare",
    "Promise",
    "PromiseRecord",
    "ProposalFailed",
    "RecoveredState",
    "Reject",
    "Role",
    "RoleChanged",
    "Send",
    "ServeCatchup",
    "chain_checksum",
    "decode_batch",
    "decode_message",
    "encode_batch",
    "encode_message",
    "recover_state",
]
