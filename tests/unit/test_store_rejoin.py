"""The pieces of a safe rejoin (phxq.replication.rejoin): what is adopted from peers, the fresh-cluster
rule, the probe codec, and rebuilding a real GroupLog from a peer's chain."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from phxq.errors import ProtocolError, Unavailable
from phxq.paxos import chain_checksum
from phxq.plog import GroupLog, LogWriter
from phxq.replication import rejoin
from phxq.replication.rejoin import Adoption, GroupView, NodeStatus, PeerView


def view(promised: tuple[int, int], cup: int, accepted: Any = ()) -> GroupView:
    return GroupView(True, promised, cup, cup * 7, 1, tuple(accepted))


def test_adopt_takes_the_highest_promise_target_and_accepted_values_above_it() -> None:
    a = view(
        (5, 1), 40, [(39, (5, 1), b"chosen-already"), (41, (4, 2), b"old"), (42, (5, 1), b"y")]
    )
    b = view((6, 3), 38, [(41, (5, 1), b"new"), (43, (7, 2), b"z")])
    got = rejoin.adopt({1: a, 3: b})
    assert got.chosen_up_to == 40
    assert got.accepted == {41: ((5, 1), b"new"), 42: ((5, 1), b"y"), 43: ((7, 2), b"z")}
    assert got.promised == (7, 2)  # an accepted ballot is a promise too
    assert got.checksums == {1: (40, 280), 3: (38, 266)}
    assert got.sources == {1: 40, 3: 38}


def test_a_new_cluster_needs_every_peer_new_or_fresh_with_our_boot_id() -> None:
    probing = PeerView(2, NodeStatus.PROBING, boot=99)
    fresh_saw_us = PeerView(3, NodeStatus.MEMBER, fresh_peers={1: 1234})
    fresh_saw_other = PeerView(3, NodeStatus.MEMBER, fresh_peers={1: 5})
    joined = PeerView(3, NodeStatus.MEMBER)
    joining = PeerView(3, NodeStatus.JOINING)
    assert rejoin.is_fresh_cluster({2: probing, 3: fresh_saw_us}, 1, 1234)
    assert not rejoin.is_fresh_cluster({2: probing, 3: fresh_saw_other}, 1, 1234)
    assert not rejoin.is_fresh_cluster({2: probing, 3: joined}, 1, 1234)
    assert not rejoin.is_fresh_cluster({2: probing, 3: joining}, 1, 1234)


def test_probe_answers_round_trip_and_malformed_ones_raise_protocol_error() -> None:
    original = PeerView(
        2,
        NodeStatus.MEMBER,
        None,
        {1: 77},
        {0: view((3, 2), 9, [(10, (3, 2), b"v")]), 5: GroupView(False, (0, 0), 0, 0, 1)},
    )
    assert rejoin.decode_view(rejoin.encode_view(original)) == original
    good = rejoin.encode_view(original)
    for bad in (
        None,
        {},
        {**good, "status": "emperor"},
        {**good, "boot": "x"},
        {**good, "groups": [[0, True, [1, 1], 1, 1, 1, [[1, 1, 1, "not bytes"]]]]},
        {**good, "groups": [[0, True, [1], 1, 1, 1, []]]},
        {**good, "fresh_peers": [[1, True]]},
    ):
        with pytest.raises(ProtocolError):
            rejoin.decode_view(bad)


class _Replica:
    """What ``rebuild`` uses of a GroupReplica."""

    def __init__(self, glog: GroupLog) -> None:
        self.glog = glog
        self.group = glog.group

    async def install_snapshot(self, data: bytes, *, rebuilding: bool = False) -> bool:
        return False

    def apply_and_write(
        self, instance: int, ballot: Any, checksum: int, value: bytes
    ) -> tuple[list[Any], asyncio.Future[None]]:
        return [], self.glog.append_chosen(instance, ballot, checksum, value, urgent=False)


def chain(values: list[bytes]) -> list[int]:
    sums = [0]
    for i, v in enumerate(values, start=1):
        sums.append(chain_checksum(sums[-1], i, v))
    return sums


VALUES = [f"value-{i}".encode() for i in range(1, 31)]
SUMS = chain(VALUES)


def peer_reader(values: list[bytes], sums: list[int]) -> Any:
    async def read(peer: int, group: int, start: int) -> dict[str, Any]:
        stop = min(len(values), start + 9)
        return {"entries": [[i, values[i - 1], sums[i]] for i in range(start, stop + 1)]}

    return read


def adoption(target: int = 30) -> Adoption:
    return Adoption(
        promised=(7, 2),
        chosen_up_to=target,
        accepted={31: ((7, 2), b"in flight")},
        checksums={2: (target, SUMS[target]), 3: (25, SUMS[25])},
        sources={2: target, 3: 25},
    )


async def test_rebuild_adopts_durably_and_learns_the_chain(tmp_path: Path) -> None:
    async with LogWriter() as w:
        glog = await GroupLog.open(tmp_path, 0, w, segment_bytes=1 << 16)
        await rejoin.rebuild(_Replica(glog), adoption(), peer_reader(VALUES, SUMS))
        assert (glog.chosen_up_to, glog.checksum) == (30, SUMS[30])
        await glog.close()
    async with LogWriter() as w:
        glog = await GroupLog.open(tmp_path, 0, w, segment_bytes=1 << 16)
        assert glog.promised == (7, 2)
        assert glog.accepted_values() == {31: ((7, 2), b"in flight")}
        got = await glog.read_chosen(1, 100, 1 << 20)
        assert [r.value for r in got] == VALUES
        await glog.close()


async def test_rebuild_refuses_a_chain_that_does_not_verify(tmp_path: Path) -> None:
    bad_sums = list(SUMS)
    bad_sums[12] ^= 1
    async with LogWriter() as w:
        glog = await GroupLog.open(tmp_path, 0, w, segment_bytes=1 << 16)
        with pytest.raises(rejoin.Diverged):
            await rejoin.rebuild(_Replica(glog), adoption(), peer_reader(VALUES, bad_sums))
        assert glog.chosen_up_to == 11
        await glog.close()


async def test_rebuild_refuses_when_our_prefix_differs_from_the_peers(tmp_path: Path) -> None:
    mine = [b"other", *VALUES[1:5]]
    async with LogWriter() as w:
        glog = await GroupLog.open(tmp_path, 0, w, segment_bytes=1 << 16)
        for i, (v, c) in enumerate(zip(mine, chain(mine)[1:], strict=True), start=1):
            await glog.append_chosen(i, None, c, v)
        with pytest.raises(rejoin.Diverged):
            await rejoin.rebuild(_Replica(glog), adoption(), peer_reader(VALUES, SUMS))
        await glog.close()


async def test_rebuild_checks_every_peers_checksum_at_its_chosen_up_to(tmp_path: Path) -> None:
    wrong = Adoption((7, 2), 30, {}, {2: (30, SUMS[30]), 3: (25, SUMS[25] ^ 1)}, {2: 30, 3: 25})
    async with LogWriter() as w:
        glog = await GroupLog.open(tmp_path, 0, w, segment_bytes=1 << 16)
        with pytest.raises(rejoin.Diverged):
            await rejoin.rebuild(_Replica(glog), wrong, peer_reader(VALUES, SUMS))
        await glog.close()


async def test_rebuild_fails_retryably_when_no_peer_sends_anything(tmp_path: Path) -> None:
    async def silent(peer: int, group: int, start: int) -> dict[str, Any]:
        return {"entries": []}

    async with LogWriter() as w:
        glog = await GroupLog.open(tmp_path, 0, w, segment_bytes=1 << 16)
        with pytest.raises(Unavailable):
            await rejoin.rebuild(_Replica(glog), adoption(), silent)
        await glog.close()


async def test_a_held_replica_has_no_deadline_and_resumes_from_its_log(tmp_path: Path) -> None:
    from phxq.paxos import GroupConfig
    from phxq.replication.replica import GroupReplica
    from phxq.store.state import StoreMachines

    sent: list[Any] = []
    config = GroupConfig(group=0, node_id=2, members=(1, 2, 3))
    async with LogWriter() as w:
        replica = await GroupReplica.open(
            config,
            tmp_path,
            lambda: GroupLog.open(tmp_path, 0, w),
            StoreMachines(60.0),
            lambda *a: sent.append(a),
            lambda *a: sent.append(a),
        )
        assert replica.next_deadline() is not None
        replica.hold("joining", "group 0: joining")
        # Before the fix the tick loop spun on a past election deadline it never consumed.
        assert replica.next_deadline() is None
        replica.on_tick(replica.paxos.next_deadline() or 0.0)
        assert not sent, "a held replica starts no election"
        await replica.glog.append_promise((9, 3))
        await replica.glog.append_accept(1, (9, 3), b"")
        replica.resume()
        assert replica.failed is None and replica.repair is None
        assert replica.next_deadline() is not None
        assert (replica.paxos.promised.round, replica.paxos.promised.node) == (9, 3)
        assert 1 in replica.paxos.acceptor.accepted
        await replica.close()


def _host(data: Path, members: tuple[int, ...] = (1, 2, 3), groups: int = 2) -> Any:
    from phxq.devcluster import free_ports
    from phxq.replication.host import PaxosHost
    from phxq.store.state import StoreMachines

    ports = free_ports(len(members))  # nobody listens: peers never answer here
    return PaxosHost(
        members[0],
        {m: f"127.0.0.1:{p}" for m, p in zip(members, ports, strict=True)},
        data,
        groups=groups,
        window=4,
        heartbeat_interval=0.1,
        lease=1.0,
        machines=StoreMachines(60.0),
    )


async def test_a_new_directory_probes_and_neither_serves_nor_votes(tmp_path: Path) -> None:
    host = _host(tmp_path)
    await host.start()
    try:
        assert host.status is NodeStatus.PROBING
        assert all(r.repair == "probing" and r.failed for r in host.replicas.values())
        assert not (tmp_path / rejoin.MEMBER_FILE).exists()
    finally:
        await host.close()


async def test_a_single_node_cluster_is_fresh_at_once(tmp_path: Path) -> None:
    host = _host(tmp_path, members=(1,))
    await host.start()
    try:
        assert host.status is NodeStatus.MEMBER
        assert all(r.failed is None for r in host.replicas.values())
        assert rejoin.read_marker(tmp_path, rejoin.MEMBER_FILE)["born"] == "fresh"  # type: ignore[index]
    finally:
        await host.close()


async def test_markers_decide_member_joining_and_legacy_directories(tmp_path: Path) -> None:
    single = _host(tmp_path, members=(1,))  # leaves logs with state behind
    await single.start()
    await single.replicas[0].glog.append_promise((3, 1))
    await single.close()
    (tmp_path / rejoin.MEMBER_FILE).unlink()  # a directory from before the marker existed

    host = _host(tmp_path)
    await host.start()
    try:
        assert host.status is NodeStatus.MEMBER  # state but no marker: taken as a member's
        assert rejoin.read_marker(tmp_path, rejoin.MEMBER_FILE)["born"] == "existing"  # type: ignore[index]
        assert all(r.failed is None for r in host.replicas.values())
    finally:
        await host.close()

    shutil.rmtree(tmp_path / "g0001")  # one group's log lost on a member
    host = _host(tmp_path)
    await host.start()
    try:
        assert host.status is NodeStatus.MEMBER
        assert host.replicas[0].failed is None
        assert host.replicas[1].repair == "joining"
    finally:
        await host.close()

    (tmp_path / rejoin.MEMBER_FILE).unlink()
    rejoin.write_marker(tmp_path, rejoin.JOINING_FILE, {"node": 1})  # a join was under way
    host = _host(tmp_path)
    await host.start()
    try:
        assert host.status is NodeStatus.JOINING
        assert all(r.repair == "joining" for r in host.replicas.values())
    finally:
        await host.close()


async def test_bad_rejoin_requests_get_bad_argument(tmp_path: Path) -> None:
    from phxq.errors import BadArgument

    host = _host(tmp_path, members=(1,))
    await host.start()
    try:
        for method, params in (
            ("rejoin_probe", {"groups": "all"}),
            ("rejoin_probe", {"groups": [0, True]}),
            ("rejoin_probe", {"groups": [0] * 3}),
            ("rejoin_probe", {"groups": [7]}),
            ("rejoin_read", {"group": 0, "from": 0}),
            ("rejoin_read", {"group": 0, "from": True}),
            ("rejoin_read", {"group": 9, "from": 1}),
            ("rejoin_read", [0, 1]),
            ("rejoin_nothing", {}),
        ):
            with pytest.raises(BadArgument):
                await host.handle_rpc(method, params)
        answer = rejoin.decode_view(await host.handle_rpc("rejoin_probe", {"groups": [1, 0]}))
        assert answer.status is NodeStatus.MEMBER and set(answer.groups) == {0, 1}
        assert (await host.handle_rpc("rejoin_read", {"group": 0, "from": 1}))["entries"] == []
    finally:
        await host.close()
