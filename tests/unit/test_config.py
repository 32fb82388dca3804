"""The cluster config: TOML in, validated frozen dataclasses out, errors that name file and key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phxq import errors
from phxq.config import (
    DEFAULTS,
    MESSAGE_BYTES_LIMIT,
    ClusterConfig,
    ClusterSettings,
    ConfigError,
    ConsumerGroupConfig,
    NodeConfig,
    TopicConfig,
    dump_config,
    format_duration,
    format_size,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)

STORE = '[[store]]\nid = 1\naddr = "127.0.0.1:7101"\ndata = "s1"\n'
TOPIC = '[[topic]]\nname = "orders"\nqueues = 8\n'

DESIGN_EXAMPLE = """
[cluster]
groups = 16

[[store]]
id = 1
addr = "127.0.0.1:7101"
dc = "dc1"
data = "./phxq-data/store1"

[[lock]]
id = 1
addr = "127.0.0.1:7201"
dc = "dc1"
data = "./phxq-data/lock1"

[[topic]]
name = "orders"
queues = 8
retention = "7d"
max_message_bytes = 1048576

[[topic]]
name = "orders.dlq"
queues = 2

[[consumer_group]]
name = "billing"
topic = "orders"
handler = "http://127.0.0.1:8080/hook"   # or "package.module:function"
rate_limit = 500                         # messages/s, adjustable at runtime
max_attempts = 5
dead_letter = "orders.dlq"
"""


def config_error(text: str, source: str = "cluster.toml") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source)
    return str(caught.value)


# ----------------------------------------------------------------------------- happy paths


def test_the_design_example_parses_to_exactly_its_values() -> None:
    cfg = parse_config(DESIGN_EXAMPLE)
    assert cfg.cluster.groups == 16
    assert cfg.store(1) == NodeConfig(1, "127.0.0.1:7101", "dc1", Path("phxq-data/store1"))
    assert cfg.lock(1).addr == "127.0.0.1:7201"
    assert cfg.topic("orders") == TopicConfig("orders", 8, 7 * 86400.0, 1 << 20, None)
    billing = cfg.consumer_group("billing")
    assert (billing.topic, billing.handler, billing.rate_limit) == (
        "orders",
        "http://127.0.0.1:8080/hook",
        500.0,
    )
    assert (billing.max_attempts, billing.dead_letter) == (5, "orders.dlq")
    assert [t.name for t in cfg.topics] == ["orders", "orders.dlq"]  # no implicit extra


def test_omitted_keys_take_the_documented_defaults() -> None:
    cfg = parse_config(STORE + TOPIC + '[[consumer_group]]\nname = "g"\ntopic = "orders"\n'
                       'handler = "pkg.mod:handle"\n')  # fmt: skip
    c = cfg.cluster
    assert c.groups == DEFAULTS["cluster.groups"] == 16
    assert (c.dedup_window, c.paxos_window, c.heartbeat_interval, c.lease) == (300, 8, 0.1, 0.6)
    assert c == ClusterSettings()
    assert c.journal_bytes == 8 << 20
    assert cfg.stores[0].dc == "default" and cfg.stores[0].metrics_addr is None
    topic = cfg.topic("orders")
    assert (topic.retention, topic.max_message_bytes, topic.retention_bytes) == (
        604800.0,
        1 << 20,
        None,
    )
    group = cfg.consumer_group("g")
    assert group == ConsumerGroupConfig("g", "orders", "pkg.mod:handle", dead_letter="orders.dlq")
    assert (group.on_failure, group.ordering, group.concurrency) == ("dead_letter", "strict", 1)
    assert (group.max_attempts, group.handler_timeout, group.rate_limit) == (5, 10.0, None)


def test_an_undeclared_default_dead_letter_topic_is_added_once_like_its_source() -> None:
    groups = "".join(
        f'[[consumer_group]]\nname = "{n}"\ntopic = "orders"\nhandler = "m:f"\n' for n in "ab"
    )
    cfg = parse_config(STORE + TOPIC + groups)
    assert [t.name for t in cfg.topics] == ["orders", "orders.dlq"]
    assert cfg.topic("orders.dlq") == dataclasses.replace(cfg.topic("orders"), name="orders.dlq")
    assert [g.name for g in cfg.consumer_groups_for("orders")] == ["a", "b"]
    assert cfg.consumer_groups_for("orders.dlq") == ()


def test_optional_keys_are_read() -> None:
    cfg = parse_config(
        STORE.replace('data = "s1"', 'data = "s1"\nmetrics_addr = "0.0.0.0:9101"')
        + TOPIC.replace("queues = 8", 'queues = 8\nretention_bytes = "64MiB"\nretention = "12h"')
        + '[cluster]\ndedup_window = "30m"\npaxos_window = 32\nheartbeat_interval = "50ms"\n'
        'lease = "2s"\n'
        '[[consumer_group]]\nname = "g"\ntopic = "orders"\nhandler = "https://h/p?q=1"\n'
        'rate_limit = 2.5\nrate_limit_bytes = "1MiB"\non_failure = "block"\n'
        'ordering = "per_key"\nconcurrency = 16\nhandler_timeout = "250ms"\nmax_attempts = 9\n'
    )
    assert cfg.cluster == ClusterSettings(16, 1800.0, 32, 0.05, 2.0)
    assert cfg.stores[0].metrics_addr == "0.0.0.0:9101"
    assert (cfg.topic("orders").retention, cfg.topic("orders").retention_bytes) == (
        43200.0,
        64 << 20,
    )
    assert cfg.consumer_group("g") == ConsumerGroupConfig(
        "g", "orders", "https://h/p?q=1", 2.5, 1 << 20, 9, "block", None, "per_key", 16, 0.25
    )


def test_relative_data_paths_are_resolved_against_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "cluster.toml"
    path.write_text(
        STORE.replace('"s1"', '"./data/../s1"')
        + '[[lock]]\nid = 1\naddr = "127.0.0.1:7201"\ndata = "/abs/lock1"\n'
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("conf/cluster.toml"))
    assert cfg.store(1).data == tmp_path / "conf" / "s1"
    assert cfg.lock(1).data == Path("/abs/lock1")
    assert cfg.source == "conf/cluster.toml"


def test_node_address_parts() -> None:
    node = NodeConfig(1, "[::1]:7101", "dc", Path("d"))
    assert (node.host, node.port) == ("::1", 7101)


def test_lookups_fail_with_typed_errors() -> None:
    cfg = parse_config(STORE + TOPIC, "c.toml")
    with pytest.raises(errors.UnknownTopic):
        cfg.topic("nope")
    with pytest.raises(ConfigError, match=r"c\.toml: no \[\[store\]\] with id 9 \(ids: 1\)"):
        cfg.store(9)
    with pytest.raises(ConfigError, match="no \\[\\[lock\\]\\] with id 1"):
        cfg.lock(1)
    with pytest.raises(ConfigError, match="no \\[\\[consumer_group\\]\\] named 'x'"):
        cfg.consumer_group("x")


def test_config_error_is_a_client_error_with_its_own_wire_code() -> None:
    error = ConfigError("cluster.toml: boom", {"key": "topic[0]"})
    assert isinstance(error, errors.ClientError)
    back = errors.from_wire(*error.to_wire())
    assert type(back) is ConfigError and back.data == {"key": "topic[0]"}


def test_configs_are_frozen() -> None:
    cfg = parse_config(STORE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.cluster.groups = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            STORE + TOPIC + '[[topic]]\nname = "b"\nqueues = "x"\n',
            'cluster.toml: topic[1].queues: expected a positive integer, got "x"',
        ),
        (STORE + '[[topic]]\nname = "b"\nqueues = 0\n', "topic[0].queues: expected a positive"),
        (STORE + '[[topic]]\nname = "b"\nqueues = true\n', "got true"),
        (STORE + '[[topic]]\nname = "b"\n', "topic[0].queues: required key is missing"),
        (STORE + '[[topic]]\nname = "a b"\nqueues = 1\n', "topic[0].name: expected a name"),
        (STORE + "[cluster]\ngroups = 0\n", "cluster.groups: expected a positive integer, got 0"),
        (STORE + "[cluster]\ngrups = 4\n", 'cluster.grups: unknown key (did you mean "groups"?)'),
        (STORE + "[topics]\n", 'topics: unknown section (did you mean "topic"?)'),
        (STORE + '[cluster]\nlease = "150ms"\n', "cluster.lease: must be at least 2 heartbeat"),
        (STORE + '[cluster]\nlease = "1 fortnight"\n', "cluster.lease: expected a duration"),
        (STORE + "[cluster]\nlease = 0\n", "cluster.lease: must be longer than 0"),
        (
            STORE + '[cluster]\njournal_bytes = "4KiB"\n',
            "cluster.journal_bytes: must be 0 (no journal) or at least 64KiB",
        ),
        (STORE + TOPIC.replace("8", '8\nretention = "-1d"'), "topic[0].retention: expected a"),
        (STORE + TOPIC.replace("8", '8\nmax_message_bytes = "1MB"'), "expected a size"),
        (STORE + TOPIC.replace("8", '8\nmax_message_bytes = "9MiB"'), "must be at most 8MiB"),
        (STORE + TOPIC.replace("8", "8\nretention_bytes = 0"), "must be larger than 0"),
        (STORE + STORE, "store[1].id: 1 is already used by store[0].id"),
        (
            STORE + STORE.replace("id = 1", "id = 2"),
            'store[1].addr: "127.0.0.1:7101" is already used by store[0].addr',
        ),
        (
            STORE + STORE.replace("id = 1", "id = 2").replace("7101", "7102"),
            'store[1].data: "s1" is already used by store[0].data',
        ),
        (
            STORE + STORE.replace("[[store]]", "[[lock]]").replace('"s1"', '"l1"'),
            'lock[0].addr: "127.0.0.1:7101" is already used by store[0].addr',
        ),
        (
            STORE.replace('data = "s1"', 'data = "s1"\nmetrics_addr = "127.0.0.1:7101"'),
            "store[0].metrics_addr: ",
        ),
        (STORE.replace("7101", "70000"), 'store[0].addr: expected "host:port" with a port'),
        (STORE.replace('"127.0.0.1:7101"', '"nohost"'), "store[0].addr: expected"),
        (STORE.replace("id = 1", "id = 0"), "store[0].id: expected a positive integer, got 0"),
        (STORE.replace('data = "s1"\n', ""), "store[0].data: required key is missing"),
        ("[cluster]\ngroups = 2\n", "store: at least one [[store]] is required"),
        ("[store]\nid = 1\n", "store: expected an array of tables ([[store]]), got a table"),
        (STORE + TOPIC + TOPIC, 'topic[1].name: "orders" is already used by topic[0].name'),
        (
            STORE + '[[consumer_group]]\nname = "g"\ntopic = "nope"\nhandler = "m:f"\n',
            'consumer_group[0].topic: no [[topic]] named "nope"',
        ),
        (
            STORE + TOPIC + '[[consumer_group]]\nname = "g"\ntopic = "orders"\nhandler = "m:f"\n'
            'dead_letter = "gone"\n',
            'consumer_group[0].dead_letter: no [[topic]] named "gone"',
        ),
        (
            STORE + TOPIC + '[[consumer_group]]\nname = "g"\ntopic = "orders"\nhandler = "m:f"\n'
            'dead_letter = "orders"\n',
            "dead_letter: must differ from the topic it serves",
        ),
        (
            STORE + TOPIC + '[[topic]]\nname = "small"\nqueues = 1\nmax_message_bytes = 10\n'
            '[[consumer_group]]\nname = "g"\ntopic = "orders"\nhandler = "m:f"\n'
            'dead_letter = "small"\n',
            "dead letters would not fit",
        ),
        (
            STORE + TOPIC + '[[consumer_group]]\nname = "g"\ntopic = "orders"\nhandler = "m:f"\n'
            'on_failure = "block"\ndead_letter = "orders"\n',
            'consumer_group[0].dead_letter: is set but on_failure = "block"',
        ),
        (
            STORE + TOPIC + '[[consumer_group]]\nname = "g"\ntopic = "orders"\nhandler = "m:f"\n'
            "concurrency = 4\n",
            'consumer_group[0].concurrency: above 1 needs ordering = "per_key"',
        ),
        (
            STORE + TOPIC + '[[consumer_group]]\nname = "g"\ntopic = "orders"\n'
            'handler = "ftp://x"\n',
            'consumer_group[0].handler: expected "http(s)://host/path" or "package.module:func',
        ),
        (
            STORE + TOPIC + '[[consumer_group]]\nname = "g"\ntopic = "orders"\nhandler = "m:f"\n'
            'ordering = "random"\n',
            'ordering: expected one of "strict", "per_key", got "random"',
        ),
        (
            STORE + TOPIC + '[[consumer_group]]\nname = "g"\ntopic = "orders"\nhandler = "m:f"\n'
            "rate_limit = -1\n",
            "consumer_group[0].rate_limit: expected a positive number per second, got -1",
        ),
        (
            STORE + TOPIC + '[[consumer_group]]\nname = "g"\ntopic = "orders"\nhandler = "m:f"\n'
            '[[consumer_group]]\nname = "g"\ntopic = "orders"\nhandler = "m:f"\n',
            'consumer_group[1].name: "g" is already used by consumer_group[0].name',
        ),
        ("[[store]\n", "cluster.toml: invalid TOML: "),
    ],
)
def test_invalid_configs_fail_naming_the_file_and_the_key(text: str, message: str) -> None:
    assert message in config_error(text)
    assert config_error(text).startswith("cluster.toml: ")


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read"):
        load_config(tmp_path / "missing.toml")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"bin\.toml: not UTF-8"):
        load_config(binary)


# ------------------------------------------------------------------------ units, round-trip


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("10s", 10), ("5m", 300), ("2h", 7200), ("7d", 604800), ("1.5h", 5400),
     (3, 3.0), (0.5, 0.5), ("0s", 0)],
)  # fmt: skip
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "5 min", "-1s", "1e3s", True, -2, float("nan"), None])
def test_bad_durations_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [("512KiB", 512 << 10), ("64MiB", 64 << 20), ("1GiB", 1 << 30), (4096, 4096), ("10B", 10),
     ("1.5KiB", 1536)],
)  # fmt: skip
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["1MB", "0.3KiB", "-1", -1, 1.5, True, "lots"])
def test_bad_sizes_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False) | st.integers(0, 10**7))
def test_formatted_durations_parse_back_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(float(seconds))) == float(seconds)


@given(st.integers(0, 1 << 50))
def test_formatted_sizes_parse_back_exactly(size: int) -> None:
    assert parse_size(format_size(size)) == size


names = st.text("abcxyz.-_0", min_size=1, max_size=8)
durations = st.sampled_from([0.25, 1.0, 90.0, 3600.0, 604800.0, 0.1234, 12.5])


@st.composite
def configs(draw: st.DrawFn) -> ClusterConfig:
    def nodes(kind: str, port0: int, min_size: int) -> tuple[NodeConfig, ...]:
        count = draw(st.integers(min_size, 4))
        return tuple(
            NodeConfig(
                i + 1,
                f"127.0.0.1:{port0 + i}",
                draw(st.sampled_from(["dc1", "dc2"])),
                Path(f"/data/{kind}{i}"),
                draw(st.none() | st.just(f"127.0.0.1:{port0 + 1000 + i}")),
            )
            for i in range(count)
        )

    heartbeat = draw(st.sampled_from([0.05, 0.1, 0.2]))
    settings = ClusterSettings(
        draw(st.integers(1, 64)), draw(durations | st.just(0.0)), draw(st.integers(1, 64)),
        heartbeat, heartbeat * draw(st.integers(2, 30)),
        journal_bytes=draw(st.sampled_from([0, 64 << 10, 8 << 20])),
    )  # fmt: skip
    topic_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    topics = tuple(
        TopicConfig(
            n, draw(st.integers(1, 100)), draw(durations), draw(st.integers(1, 1 << 20)),
            draw(st.none() | st.integers(1, 1 << 40)),
        )
        for n in topic_names
    )  # fmt: skip
    dlq = TopicConfig("dlq", 1, 60.0, MESSAGE_BYTES_LIMIT)
    groups = []
    for i in range(draw(st.integers(0, 3))):
        per_key = draw(st.booleans())
        block = draw(st.booleans())
        groups.append(
            ConsumerGroupConfig(
                f"g{i}", draw(st.sampled_from(topic_names)),
                draw(st.sampled_from(["http://h:1/x", "pkg.mod:fn"])),
                draw(st.none() | st.floats(0.001, 1e6)), draw(st.none() | st.integers(1, 1 << 30)),
                draw(st.integers(1, 10)), "block" if block else "dead_letter",
                None if block else "dlq", "per_key" if per_key else "strict",
                draw(st.integers(1, 8)) if per_key else 1, draw(durations),
            )
        )  # fmt: skip
    return ClusterConfig(
        settings, nodes("store", 7100, 1), nodes("lock", 7200, 0), (*topics, dlq), tuple(groups)
    )


@given(configs())
def test_dumped_configs_parse_back_equal(cfg: ClusterConfig) -> None:
    assert parse_config(dump_config(cfg)) == cfg


def test_the_dev_cluster_config_loads(tmp_path: Path) -> None:
    from phxq.devcluster import write_dev_config

    cfg = load_config(write_dev_config(tmp_path, nodes=3))
    assert [s.data for s in cfg.stores] == [tmp_path / f"store{i}" for i in (1, 2, 3)]
    assert parse_config(dump_config(cfg)) == cfg
