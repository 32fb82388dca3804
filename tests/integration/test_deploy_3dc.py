"""scripts/deploy_3dc: the generator (inventory -> cluster TOML + systemd units), the per-store
``peers`` config key it relies on, the drill's history checker, and the drill itself run as
operators run it (a subprocess on real store processes behind fault proxies)."""

from __future__ import annotations

import asyncio
import importlib
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

import phxq
from phxq.config import ConfigError, dump_config, load_config, parse_config
from phxq.devcluster import ProcessCluster
from phxq.net.rpc import RpcPool
from tools.fault.proxy import FaultProxy

from .conftest import wait_until

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "scripts" / "deploy_3dc"

SAMPLE = """
[deploy]
config_path = "/etc/phxq/cluster.toml"
data_dir = "/srv/phxq"
phxq = "/opt/phxq/bin/phxq"
user = "queue"
locks = 5
store_metrics_port = 9101

[cluster]
groups = 12

[[dc]]
name = "north"
hosts = ["10.1.0.1", "10.1.0.2"]

[[dc]]
name = "south"
hosts = ["10.2.0.1", "10.2.0.2"]

[[dc]]
name = "east"
hosts = ["10.3.0.1", { host = "10.3.0.2", name = "east-2", store_port = 7111 }]

[[topic]]
name = "orders"
queues = 24

[[consumer_group]]
name = "billing"
topic = "orders"
handler = "http://127.0.0.1:8080/hook"
"""


def generate(tmp_path: Path, inventory: str, *options: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "inventory.toml"
    path.write_text(inventory)
    return subprocess.run(
        [
            sys.executable,
            str(DEPLOY / "generate"),
            "--inventory",
            str(path),
            "--out",
            str(tmp_path / "out"),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_generated_config_loads_with_every_group_in_three_dcs_and_masters_balanced(
    tmp_path: Path,
) -> None:
    run = generate(tmp_path, SAMPLE)
    assert run.returncode == 0, run.stderr
    cfg = load_config(tmp_path / "out" / "cluster.toml")
    stores = sorted(cfg.stores, key=lambda s: s.id)
    assert [s.dc for s in stores] == ["north", "south", "east"] * 2  # ids alternate DCs
    assert {s.addr for s in stores} >= {"10.1.0.1:7101", "10.3.0.2:7111"}
    assert all(str(s.data) == f"/srv/phxq/store{s.id}" for s in stores)
    assert stores[0].metrics_addr == "10.1.0.1:9101"
    # every store holds every group: each group's replicas span the three DCs
    assert {s.dc for s in stores} == {"north", "south", "east"}
    ids = [s.id for s in stores]
    masters = Counter(cfg.store(ids[g % len(ids)]).dc for g in range(cfg.cluster.groups))
    assert masters == {"north": 4, "south": 4, "east": 4}
    # five lock nodes spread 2/2/1: any one DC lost leaves a lock majority, and a store one
    locks = Counter(lk.dc for lk in cfg.locks)
    assert sorted(locks.values()) == [1, 2, 2]
    for dc in ("north", "south", "east"):
        assert len(cfg.locks) - locks[dc] >= len(cfg.locks) // 2 + 1
        assert sum(s.dc != dc for s in stores) >= len(stores) // 2 + 1
    assert cfg.topic("orders").queues == 24
    assert cfg.consumer_group("billing").dead_letter == "orders.dlq"
    assert "north" in (tmp_path / "out" / "placement.txt").read_text()


def test_units_run_the_right_daemon_with_the_right_id_on_each_host(tmp_path: Path) -> None:
    assert generate(tmp_path, SAMPLE).returncode == 0
    cfg = load_config(tmp_path / "out" / "cluster.toml")
    hosts = tmp_path / "out" / "hosts"
    exec_lines: dict[tuple[str, str], str] = {}
    for unit in hosts.glob("*/*.service"):
        text = unit.read_text()
        assert "User=queue" in text and "[Install]" in text
        (line,) = re.findall(r"^ExecStart=(.*)$", text, re.M)
        exec_lines[(unit.parent.name, unit.name)] = line
    for s in cfg.stores:
        host = "east-2" if s.addr == "10.3.0.2:7111" else s.host
        assert exec_lines.pop((host, "phxq-store.service")) == (
            f"/opt/phxq/bin/phxq store --config /etc/phxq/cluster.toml --node {s.id}"
        )
        assert exec_lines.pop((host, "phxq-consumer.service")) == (
            f"/opt/phxq/bin/phxq consumer --config /etc/phxq/cluster.toml --id {host}"
        )
    for lk in cfg.locks:
        assert exec_lines.pop((lk.host, "phxq-lock.service")) == (
            f"/opt/phxq/bin/phxq lock --config /etc/phxq/cluster.toml --node {lk.id}"
        )
    assert exec_lines == {}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('[[dc]]\nname = "east"', '[[dcx]]\nname = "east"'), "dcx: unknown key"),
        (
            ('"10.1.0.2"]', '"10.1.0.2", "10.1.0.3", "10.1.0.4"]'),
            'dc[0].hosts: DC "north" has 4 of 8 stores; losing it would lose the majority',
        ),
        (("locks = 5", "locks = 4"), "deploy.locks: expected 3 or 5"),
        (
            (
                '[[dc]]\nname = "north"',
                '[[dc]]\nname = "west"\nhosts = ["h"]\n[[dc]]\nname = "north"',
            ),
            "dc: expected exactly 3 [[dc]] tables, got 4",
        ),
        (("user = ", "usr = "), "deploy.usr: unknown key"),
        (
            ('data_dir = "/srv/phxq"', 'data_dir = "srv"'),
            "deploy.data_dir: expected an absolute path",
        ),
        (('"10.2.0.2"]', '"10.2.0.1"]'), 'dc[1].hosts[1]: host name "10.2.0.1" is already used'),
        (("queues = 24", "queues = 0"), "topic[0].queues: expected a positive integer"),
        (('topic = "orders"', 'topic = "nope"'), "consumer_group[0].topic: no [[topic]]"),
        (("groups = 12", 'groups = "x"'), "cluster.groups: expected a positive integer"),
        (('name = "south"', 'name = "north"'), 'dc[1].name: DC "north" is declared twice'),
    ],
)
def test_bad_inventory_is_rejected_naming_the_key_and_writes_nothing(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    assert change[0] in SAMPLE
    run = generate(tmp_path, SAMPLE.replace(*change))
    assert run.returncode == 1
    assert expected in run.stderr, run.stderr
    assert "inventory.toml" in run.stderr
    assert not (tmp_path / "out" / "cluster.toml").exists()


def _check_sets(tmp_path: Path, sets: int, size: int) -> None:
    """The generated multi-set deployment: every set spread over the DCs, no host with two
    stores of one set, one port per daemon, ``phxq config check`` passing, one unit per store."""
    out = tmp_path / "out"
    cfg = load_config(out / "cluster.toml")
    assert cfg.sets == tuple(range(1, sets + 1))
    for number in cfg.sets:
        members = [s for s in cfg.stores if s.set == number]
        assert len(members) == size
        dcs = Counter(s.dc for s in members)
        assert set(dcs) == {"north", "south", "east"}
        assert max(dcs.values()) * 2 < size, f"set {number}: a DC holds half: {dcs}"
        assert len({s.host for s in members}) == size, "two stores of a set on one host"
        ids = sorted(s.id for s in members)  # the set's preferred masters rotate over the DCs
        masters = Counter(cfg.store(ids[g % size]).dc for g in range(cfg.cluster.groups))
        assert len(masters) == 3
    addrs = [s.addr for s in cfg.stores] + [lk.addr for lk in cfg.locks]
    assert len(set(addrs)) == len(addrs)
    metrics = [s.metrics_addr for s in cfg.stores]
    assert len(set(metrics)) == len(metrics)
    check = subprocess.run(
        [sys.executable, "-m", "phxq", "config", "check", str(out / "cluster.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert f"in {sets} store sets" in check.stdout
    for s in cfg.stores:
        host = "east-2" if s.addr.startswith("10.3.0.2:") else s.host
        unit = (out / "hosts" / host / f"phxq-store-{s.id}.service").read_text()
        assert f"store --config /etc/phxq/cluster.toml --node {s.id}\n" in unit
    assert len(list(out.glob("hosts/*/phxq-store*.service"))) == sets * size
    assert f"set {sets} ({size} stores" in (out / "placement.txt").read_text()


def test_multi_set_deployments_spread_every_set_over_the_three_dcs(tmp_path: Path) -> None:
    run = generate(tmp_path, SAMPLE, "--sets", "4")
    assert run.returncode == 0, run.stderr
    _check_sets(tmp_path, 4, 3)
    cfg = load_config(tmp_path / "out" / "cluster.toml")
    # A host runs one store per set it hosts, each on store_port + set - 1.
    assert {s.addr for s in cfg.stores if s.host == "10.1.0.1"} == {
        "10.1.0.1:7101",
        "10.1.0.1:7103",
    }
    assert cfg.store(5).addr == "10.3.0.2:7112"  # a host's own store_port is the base
    # One set more later: the existing stores keep their ids, hosts and ports.
    (tmp_path / "three").mkdir()
    assert generate(tmp_path / "three", SAMPLE, "--sets", "3").returncode == 0
    before = load_config(tmp_path / "three" / "out" / "cluster.toml").stores
    assert before == cfg.stores[: len(before)]
    # Sets of five from the inventory itself: 2/2/1 over the DCs, on 2 hosts per DC.
    five = SAMPLE.replace("locks = 5", "locks = 5\nsets = 2\nset_size = 5")
    (tmp_path / "five").mkdir()
    run = generate(tmp_path / "five", five)
    assert run.returncode == 0, run.stderr
    _check_sets(tmp_path / "five", 2, 5)


@pytest.mark.parametrize(
    ("change", "options", "expected"),
    [
        (("", ""), ("--sets", "1", "--set-size", "4"), "--set-size: expected 3 or 5"),
        (("locks = 5", "locks = 5\nsets = 0"), (), "deploy.sets: expected a positive number"),
        (
            ('hosts = ["10.2.0.1", "10.2.0.2"]', 'hosts = ["10.2.0.1"]'),
            ("--sets", "1", "--set-size", "5"),
            'dc[1].hosts: a set of 5 stores needs 2 hosts in DC "south"',
        ),
        (
            ("user = ", "lock_port = 7102\nuser = "),
            ("--sets", "2"),
            "10.1.0.2:7102 would serve both store 6 and lock 4",
        ),
    ],
)
def test_bad_multi_set_layouts_are_rejected(
    tmp_path: Path, change: tuple[str, str], options: tuple[str, ...], expected: str
) -> None:
    assert change[0] in SAMPLE
    run = generate(tmp_path, SAMPLE.replace(*change, 1), *options)
    assert run.returncode == 1
    assert expected in run.stderr, run.stderr
    assert not (tmp_path / "out" / "cluster.toml").exists()


PEERS = """
[[store]]
id = 1
addr = "127.0.0.1:7101"
data = "/d/1"
peers = { "2" = "127.0.0.1:17102" }

[[store]]
id = 2
addr = "127.0.0.1:7102"
data = "/d/2"
"""


def test_store_peers_parse_and_dump_round_trip() -> None:
    cfg = parse_config(PEERS)
    assert cfg.store(1).peers == ((2, "127.0.0.1:17102"),)
    assert cfg.store(2).peers == ()
    assert parse_config(dump_config(cfg)) == cfg


@pytest.mark.parametrize(
    ("peers", "expected"),
    [
        ('{ "3" = "127.0.0.1:1" }', "store[0].peers.3: no [[store]] has this id"),
        ('{ "1" = "127.0.0.1:1" }', "store[0].peers.1: this store itself"),
        ('{ "x" = "127.0.0.1:1" }', "store[0].peers.x: keys must be store ids"),
        ('{ "2" = "nowhere" }', 'store[0].peers.2: expected "host:port"'),
        ('"127.0.0.1:1"', "store[0].peers: expected a table"),
    ],
)
def test_bad_store_peers_are_config_errors(peers: str, expected: str) -> None:
    text = PEERS.replace('{ "2" = "127.0.0.1:17102" }', peers)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_config(text)


def test_lock_peers_must_name_lock_nodes() -> None:
    text = '[[store]]\nid = 1\naddr = "h:1"\ndata = "/a"\n[[lock]]\nid = 1\naddr = "h:2"\n'
    text += 'data = "/b"\npeers = { "2" = "h:3" }\n'
    with pytest.raises(ConfigError, match=re.escape("lock[0].peers.2: no [[lock]] has this id")):
        parse_config(text)


# ------------------------------------------------------------------------ the drill checker


@pytest.fixture
def drill(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(DEPLOY))
    return importlib.import_module("drill")


def _history(drill: ModuleType) -> tuple[list, dict[int, int], dict[int, dict[int, list]]]:
    acks = [drill.AckRecord(0, seq, 100 + seq, 0.0) for seq in range(3)]
    rows = [(100 + seq, f"0:{seq}".encode()) for seq in range(3)]
    return acks, {0: 3}, {1: {0: list(rows)}, 2: {0: list(rows)}, 3: {0: list(rows)}}


def test_checker_passes_a_clean_history(drill: ModuleType) -> None:
    report = drill.DrillReport(options={})
    drill.check_queues(report, *_history(drill))
    assert (report.lost, report.unexpected, report.order_violations) == (0, 0, 0)
    assert (report.replica_mismatches, report.duplicates, report.problems) == (0, 0, [])


def test_checker_counts_a_lost_ack_a_reorder_a_stranger_and_a_divergent_replica(
    drill: ModuleType,
) -> None:
    acks, attempted, copies = _history(drill)
    del copies[2][0][1]  # store 2 lost seq 1
    copies[3][0] = [copies[3][0][0], copies[3][0][2], copies[3][0][1], (200, b"9:9")]
    report = drill.DrillReport(options={})
    drill.check_queues(report, acks, attempted, copies)
    assert report.lost == 1
    assert report.order_violations == 1
    assert report.unexpected == 1
    assert report.replica_mismatches == 2
    assert not report.ok


# ----------------------------------------------------------------------------- the drills


def simulate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [sys.executable, str(DEPLOY / "simulate"), "--data", str(tmp_path / "sim"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return run


def _summary(run: subprocess.CompletedProcess[str]) -> dict[str, str]:
    (line,) = [x for x in run.stdout.splitlines() if x.startswith("3dc-drill:")]
    return dict(re.findall(r"(\w+)=(\S+)", line)) | {"status": line.split()[1]}


def test_drill_whole_dc_sigkilled_under_load_loses_nothing(tmp_path: Path) -> None:
    run = simulate(tmp_path, "--warmup", "3", "--down", "5", "--after", "4")
    assert run.returncode == 0, run.stdout + run.stderr
    summary = _summary(run)
    assert summary["status"] == "OK"
    assert summary["lost"] == "0" and summary["replicas"] == "identical"
    assert int(summary["acked"]) > 0 and int(summary["acks_while_down"]) > 0
    assert "producer pause:" in run.stdout


def test_drill_with_two_store_sets_loses_one_store_of_each_and_nothing_acked(
    tmp_path: Path,
) -> None:
    run = simulate(tmp_path, "--sets", "2", "--warmup", "2", "--down", "4", "--after", "3")
    assert run.returncode == 0, run.stdout + run.stderr
    summary = _summary(run)
    assert summary["status"] == "OK" and summary["lost"] == "0"
    assert summary["replicas"] == "identical" and int(summary["acks_while_down"]) > 0
    (up,) = [x for x in run.stdout.splitlines() if x.startswith("cluster up:")]
    assert re.search(r"DC dc1 = stores \[\d+, \d+\]", up), up  # one store of each set
    config = (tmp_path / "sim" / "cluster.toml").read_text()
    assert "set = 2" in config and 'lease = "600ms"' in config  # the default lease


async def test_client_finds_the_new_master_when_the_first_store_it_asks_is_cut_off(
    tmp_path: Path, drill: ModuleType
) -> None:
    """Regression (found by ``simulate --fault partition``): a store cut off from its peers
    knows no master and answers NotMaster without a hint; a client that still reaches it (and
    has it first among its seeds) asked it again forever instead of trying the others."""
    config_path, plan = drill.layout(drill.DrillOptions(data=tmp_path, groups=3, queues=3))
    proxies = {
        pair: FaultProxy(f"127.0.0.1:{port}", target) for pair, (port, target) in plan.items()
    }
    cluster = ProcessCluster(config_path)
    try:
        for proxy in proxies.values():
            await proxy.start()
        cluster.start()
        await cluster.wait_ready_async(timeout=30)
        addrs = {s.id: s.addr for s in cluster.config.stores}
        async with RpcPool() as pool:
            cut = 1  # group 0's preferred master: where a client without a map asks first
            for (i, j), proxy in proxies.items():
                if cut in (i, j):
                    proxy.partition("both")
            others = [n for n in addrs if n != cut]

            async def failed_over() -> bool:
                cut_view = (await pool.call(addrs[cut], "meta", {}))["masters"]["0"]
                new = {(await pool.call(addrs[n], "meta", {}))["masters"]["0"] for n in others}
                return cut_view is None and len(new) == 1 and new.isdisjoint({None, cut})

            await wait_until(failed_over, 20, "the two connected stores to elect a new master")
        seeds = [addrs[cut], *(addrs[n] for n in others)]
        async with phxq.Client(seeds, request_timeout=1.0, retry_timeout=5.0) as client:
            ack = await client.enqueue("drill", b"after the cut", queue=0)
            page = await client.dequeue(None, "drill", queue=0, after=ack.offset - 1, limit=1)
        assert [m.payload for m in page] == [b"after the cut"]
    finally:
        cluster.stop()
        for proxy in proxies.values():
            proxy.drop_connections()
        await asyncio.sleep(0.1)  # let proxy handlers end before close() cancels the rest
        for proxy in proxies.values():
            await proxy.close()
