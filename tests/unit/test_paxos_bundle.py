"""Bundles: several encoded Paxos messages for one peer in one body (``phxq.paxos.bundle``),
and the host sending one ``px`` notification per peer for what it sends inside ``bundling()``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from phxq.lock.node import LockMachines
from phxq.paxos import Accepted, Ballot, Chosen, Heartbeat, encode_message
from phxq.paxos.bundle import MAX_BUNDLE, bundle, unbundle
from phxq.replication.host import PaxosHost
from tests.unit.test_paxos_codec_fuzz import messages


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, min_size=1, max_size=20))
def test_bundle_round_trip(msgs: list[Any]) -> None:
    data = bundle([encode_message(m) for m in msgs])
    assert unbundle(data) == (msgs, None)


def test_one_message_is_sent_as_itself() -> None:
    msg = Accepted(group=1, sender=2, ballot=Ballot(3, 2), instance=7)
    assert bundle([encode_message(msg)]) == encode_message(msg)
    many = [
        encode_message(Accepted(group=g, sender=2, ballot=Ballot(3, 2), instance=7))
        for g in range(20)
    ]
    assert msgpack.unpackb(bundle(many), raw=False)[19] == [5, 19, 2, [3, 2], 7]  # u16 header


def test_malformed_member_keeps_the_messages_before_it() -> None:
    good = encode_message(Chosen(group=0, sender=1, ballot=Ballot(1, 1), first=1, last=2))
    bad = msgpack.packb([5, 0, 1, [1, 1], 0])  # Accepted of instance 0
    msgs, error = unbundle(bundle([good, bad, good]))
    assert len(msgs) == 1 and error is not None and "instance" in error.message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_unbundle_never_raises(data: bytes) -> None:
    msgs, error = unbundle(data)
    assert error is not None or msgs


def test_nested_and_empty_bundles_are_refused() -> None:
    one = encode_message(Accepted(group=1, sender=2, ballot=Ballot(3, 2), instance=7))
    nested = bundle([bundle([one, one]), one])
    assert unbundle(nested)[0] == [] and unbundle(nested)[1] is not None
    empty = unbundle(b"\x90")
    assert empty[0] == [] and empty[1] is not None
    assert unbundle("text")[1] is not None
    assert MAX_BUNDLE == 1 << 16


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str, Any, bool]] = []

    def notify(self, to: int, method: str, params: Any, *, lazy: bool = False) -> None:
        self.sent.append((to, method, params, lazy))

    async def call(self, to: int, method: str, params: Any, *, timeout: float) -> Any:
        raise AssertionError("no calls expected")

    async def close(self) -> None:
        pass


def test_host_sends_one_notification_per_peer_per_bundling(tmp_path: Path) -> None:
    peers = _Recorder()
    host = PaxosHost(
        1,
        {1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"},
        tmp_path,
        groups=4,
        window=4,
        heartbeat_interval=0.1,
        lease=1.0,
        machines=LockMachines(),
        peers=peers,
    )
    chosen = [Chosen(group=g, sender=1, ballot=Ballot(1, 1), first=1, last=1) for g in range(4)]
    beats = [
        Heartbeat(group=g, sender=1, ballot=Ballot(1, 1), chosen_up_to=1, checksum=0)
        for g in range(4)
    ]
    host.send(2, encode_message(chosen[0]), True)  # outside bundling(): leaves at once
    assert [(to, lazy) for to, _, _, lazy in peers.sent] == [(2, True)]
    peers.sent.clear()
    with host.bundling():
        for g in range(4):
            host.send(2, encode_message(chosen[g]), True)  # lazy
            host.send(2, encode_message(beats[g]), False)
        host.send(3, encode_message(chosen[0]), True)
        host.send(1, encode_message(chosen[0]), False)  # to itself: never sent
        assert peers.sent == []  # nothing leaves before the end
    assert [(to, method, lazy) for to, method, _, lazy in peers.sent] == [
        (2, "px", False),
        (3, "px", True),  # only lazy messages: the notification is lazy too
    ]
    assert unbundle(peers.sent[0][2]) == ([*beats, *chosen], None)  # urgent ones first
    assert unbundle(peers.sent[1][2]) == ([chosen[0]], None)
