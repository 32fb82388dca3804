"""The permission table and the guard: every RPC has an entry, and each entry decides right."""

from __future__ import annotations

from typing import Any

import pytest

from phxq.errors import BadArgument, Forbidden, Unauthenticated
from phxq.lock import service as lock_service
from phxq.replication.membership import REJOIN_METHODS
from phxq.security.policy import LOCK_RULES, MEMBER_NOTIFIES, STORE_RULES, Guard, Session
from phxq.security.principals import Principals, new_token, token_sha256
from phxq.store import service as store_service


def test_every_store_handler_has_a_rule() -> None:
    registered = set(store_service.HANDLERS) | set(REJOIN_METHODS)
    assert registered - set(STORE_RULES) == set()
    assert set(STORE_RULES) - registered == set(), "a rule for a method nobody serves"


def test_every_lock_handler_has_a_rule() -> None:
    registered = set(lock_service.HANDLERS) | set(REJOIN_METHODS)
    assert registered - set(LOCK_RULES) == set()
    assert set(LOCK_RULES) - registered == set(), "a rule for a method nobody serves"


def test_peer_notifications_are_members_only() -> None:
    assert {"px", "snap"} == MEMBER_NOTIFIES


TOKENS = {name: new_token() for name in ("producer", "consumer", "admin", "wild", "all")}
PRINCIPALS = Principals(
    [
        ("producer", token_sha256(TOKENS["producer"]), ["produce:orders"]),
        ("consumer", token_sha256(TOKENS["consumer"]), ["consume:orders:billing"]),
        ("admin", token_sha256(TOKENS["admin"]), ["admin"]),
        ("wild", token_sha256(TOKENS["wild"]), ["produce:orders.*", "consume:*:audit-*"]),
        ("all", token_sha256(TOKENS["all"]), ["*"]),
    ]
)


def _session(who: str | None) -> tuple[Guard, Session]:
    guard = Guard(STORE_RULES, PRINCIPALS, name="test")
    session = Session("peer", None)
    if who == "member":
        session = Session("peer", "store-2")
    elif who is not None:
        assert guard.hello(session, {"token": TOKENS[who]}) == {"principal": who}
    return guard, session


ENQ = {"topic": "orders", "batches": []}
DEQ = {"group": "billing", "topic": "orders", "queue": 0, "limit": 1}
TAIL = {"group": None, "topic": "orders", "queue": 0, "limit": 1}
# (principal, method, params, allowed)
CASES: list[tuple[str, str, dict[str, Any], bool]] = [
    ("producer", "meta", {}, True),
    ("producer", "enqueue", ENQ, True),
    ("producer", "enqueue", {**ENQ, "topic": "payments"}, False),
    ("producer", "dequeue", DEQ, False),
    ("producer", "status", {}, False),
    ("consumer", "enqueue", ENQ, False),
    ("consumer", "dequeue", DEQ, True),
    ("consumer", "dequeue", TAIL, True),
    ("consumer", "dequeue", {**DEQ, "group": "other"}, False),
    ("consumer", "dequeue", {**DEQ, "local": True}, False),
    ("consumer", "commit", {**DEQ, "offset": 1, "token": 1}, True),
    ("consumer", "seek", {**DEQ, "offset": 1}, True),
    ("consumer", "cursor", {**DEQ, "topic": "payments"}, False),
    ("consumer", "reconcile", {"topic": "orders"}, False),
    ("admin", "status", {}, True),
    ("admin", "reconcile", {"topic": "orders"}, True),
    ("admin", "checksum", {}, True),
    ("admin", "enqueue", ENQ, True),
    ("admin", "rejoin_read", {}, False),
    ("admin", "rejoin_probe", {}, False),
    ("wild", "enqueue", {**ENQ, "topic": "orders.eu"}, True),
    ("wild", "enqueue", ENQ, False),
    ("wild", "dequeue", {**DEQ, "group": "audit-1", "topic": "x"}, True),
    ("wild", "dequeue", DEQ, False),
    ("all", "status", {}, True),
    ("all", "rejoin_read", {}, False),
    ("member", "rejoin_read", {}, True),
    ("member", "enqueue", ENQ, True),
]


@pytest.mark.parametrize(("who", "method", "params", "allowed"), CASES)
def test_store_rule(who: str, method: str, params: dict[str, Any], allowed: bool) -> None:
    guard, session = _session(who)
    if allowed:
        guard.authorize(session, method, params)
    else:
        with pytest.raises(Forbidden) as info:
            guard.authorize(session, method, params)
        assert TOKENS[who if who != "member" else "all"] not in str(info.value)


def test_lock_rules_members_hold_locks_admins_write_settings() -> None:
    guard = Guard(LOCK_RULES, PRINCIPALS)
    admin = Session("p", None)
    guard.hello(admin, {"token": TOKENS["admin"]})
    member = Session("p", "consumer")
    for method, params in (("acquire", {"name": "x"}), ("kv_put", {"key": "consumers/c1"})):
        with pytest.raises(Forbidden):
            guard.authorize(admin, method, params)
        guard.authorize(member, method, params)
    guard.authorize(admin, "kv_put", {"key": "settings/billing/paused"})
    guard.authorize(admin, "kv_list", {"prefix": "consumers/"})
    guard.authorize(admin, "get", {"name": "x"})


def test_unknown_method_is_refused_even_to_members() -> None:
    guard, session = _session("member")
    with pytest.raises(Forbidden):
        guard.authorize(session, "drop_everything", {})


def test_anonymous_and_wrong_tokens_are_unauthenticated() -> None:
    guard, session = _session(None)
    with pytest.raises(Unauthenticated):
        guard.authorize(session, "meta", {})
    secret = "not-a-token-" + new_token()
    with pytest.raises(Unauthenticated) as info:
        guard.hello(session, {"token": secret})
    assert secret not in str(info.value) and secret not in repr(info.value)
    with pytest.raises(Unauthenticated):
        guard.hello(session, ["garbage"])
    assert not guard.admit_notify(session, "px")


def test_only_members_send_paxos_notifications() -> None:
    guard, admin = _session("admin")
    assert not guard.admit_notify(admin, "px")
    member = Session("p", "store-1")
    assert guard.admit_notify(member, "px")
    assert guard.admit_notify(member, "snap")
    assert not guard.admit_notify(member, "gossip")


def test_a_reload_revokes_and_changes_grants_on_open_sessions() -> None:
    guard, session = _session("producer")
    guard.authorize(session, "enqueue", ENQ)
    digest = token_sha256(TOKENS["producer"])
    guard.set_principals(Principals([("producer", digest, ["produce:payments"])]))
    with pytest.raises(Forbidden):
        guard.authorize(session, "enqueue", ENQ)
    guard.set_principals(Principals([]))
    with pytest.raises(Unauthenticated):
        guard.authorize(session, "enqueue", {**ENQ, "topic": "payments"})


def test_bad_params_are_a_bad_argument_after_authentication() -> None:
    guard, session = _session("producer")
    with pytest.raises(BadArgument):
        guard.authorize(session, "enqueue", ["not", "a", "map"])
    with pytest.raises(BadArgument):
        guard.authorize(session, "enqueue", {"topic": 7})
