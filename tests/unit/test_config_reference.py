"""The configuration reference (docs/configuration.md) cannot drift from the parser."""

from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w

from phxq.config import DEFAULTS, parse_config
from phxq.config.reference import REFERENCE, render_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_docs_configuration_md_is_generated_from_the_reference() -> None:
    assert DOC.read_text() == render_markdown(), (
        "docs/configuration.md is stale: run `python -m phxq.config.reference > "
        "docs/configuration.md`"
    )


def test_every_key_with_a_default_is_documented() -> None:
    documented = {f"{k.defaults_kind or k.table}.{k.name}" for k in REFERENCE}
    assert set(DEFAULTS) - documented == set()


def _example(key_example: str) -> object:
    return tomllib.loads(f"v = {key_example}")["v"]


def test_a_config_setting_every_documented_key_parses() -> None:
    tables: dict[str, dict[str, object]] = {}
    for key in REFERENCE:
        tables.setdefault(key.table, {})[key.name] = _example(key.example)
    doc: dict[str, object] = {"cluster": tables.pop("cluster")}
    store, lock = tables.pop("store"), tables.pop("lock")
    stores = [dict(store, id=i, addr=f"127.0.0.1:{7100 + i}", data=f"s{i}") for i in (1, 2, 3)]
    locks = [
        dict(
            lock,
            id=i,
            addr=f"127.0.0.1:{7200 + i}",
            data=f"l{i}",
            metrics_addr=f"127.0.0.1:{9200 + i}",
        )
        for i in (1, 2, 3)
    ]
    for i, store in enumerate(stores, 1):
        store["metrics_addr"] = f"127.0.0.1:{9100 + i}"
        store["peers"] = {str(j): f"127.0.0.1:{17100 + j}" for j in (1, 2, 3) if j != i}
    for i, lock in enumerate(locks, 1):
        lock["peers"] = {str(j): f"127.0.0.1:{17200 + j}" for j in (1, 2, 3) if j != i}
    topic = tables.pop("topic")
    doc |= {"store": stores, "lock": locks, "topic": [topic, dict(topic, name="orders.dlq")]}
    doc["consumer_group"] = [tables.pop("consumer_group")]
    doc["security"] = tables.pop("security")
    doc["principal"] = [tables.pop("principal")]
    doc["client"] = tables.pop("client")
    doc["gateway"] = tables.pop("gateway")
    doc["consumer"] = [tables.pop("consumer")]
    doc["producer_group"] = [tables.pop("producer_group")]
    assert tables == {}, f"tables the test does not place yet: {sorted(tables)}"
    cfg = parse_config(tomli_w.dumps(doc), base_dir=Path("/"))
    assert cfg.topic("orders").queues == _example(
        next(k.example for k in REFERENCE if (k.table, k.name) == ("topic", "queues"))
    )
