"""The gateway's pure parts: the schema validator, the error -> problem mapping, and the
OpenAPI document generated from the route table."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phxq import errors
from phxq.client import Ack
from phxq.config import ConfigError, parse_config
from phxq.config.dump import dump_config
from phxq.errors import BadArgument, PhxqError
from phxq.gateway.cors import Cors
from phxq.gateway.handlers import ack_bytes, ack_json
from phxq.gateway.openapi import openapi_document
from phxq.gateway.problems import PROBLEM_STATUSES, Problem, problem_for
from phxq.gateway.routes import build_routes
from phxq.gateway.schema import parse_param, validate
from phxq.gateway.txn import Handle
from phxq.security.principals import Permission

ROUTES = build_routes(60.0)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100)
@given(value=json_values, index=st.integers(0, len(ROUTES) - 1))
def test_any_json_body_is_accepted_or_refused_with_bad_argument(value, index):
    body_schema = ROUTES[index].json_body
    if body_schema is None:
        return
    try:
        validate(body_schema, value)
    except BadArgument as exc:
        assert exc.message.startswith("body")


@pytest.mark.parametrize(
    "schema,text,want",
    [
        ({"type": "integer", "minimum": 0}, "17", 17),
        ({"type": "number", "maximum": 2}, "1.5", 1.5),
        ({"type": "boolean"}, "true", True),
        ({"type": "string", "enum": ["now", "start"]}, "start", "start"),
    ],
)
def test_parameters_parse_to_their_declared_types(schema, text, want):
    assert parse_param(schema, text, "q") == want


@pytest.mark.parametrize(
    "schema,text",
    [
        ({"type": "integer", "minimum": 0}, "-1"),
        ({"type": "integer"}, "1.5"),
        ({"type": "integer"}, "9" * 30),
        ({"type": "number"}, "nan"),
        ({"type": "number"}, "1e999"),
        ({"type": "string", "maxLength": 3}, "abcd"),
        ({"type": "string"}, "\udc80"),
    ],
)
def test_bad_parameters_are_bad_arguments(schema, text):
    with pytest.raises(BadArgument):
        parse_param(schema, text, "q")


def test_every_error_class_maps_to_a_documented_status():
    for code, cls in errors.error_classes().items():
        p = problem_for(cls("x"))
        assert p.status in PROBLEM_STATUSES, code
        assert p.code == code and p.body()["code"] == code
        assert ("Retry-After" in p.headers()) == (p.status in (429, 503))
    assert problem_for(errors.Unavailable("x")).status == 503
    assert problem_for(errors.StaleToken("x")).status == 409
    assert problem_for(errors.MessageTooLarge("x")).status == 413
    assert problem_for(errors.UnknownTopic("x")).status == 404
    assert problem_for(errors.Forbidden("x")).status == 403
    assert problem_for(errors.Unauthenticated("x")).headers()["WWW-Authenticate"]
    assert problem_for(PhxqError("")).status == 500


def test_the_document_lists_every_route_of_the_table_and_nothing_else():
    doc = openapi_document(ROUTES, version="1", secured=True)
    listed = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    assert listed == {(r.method, r.path) for r in ROUTES}
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        names = {p["name"] for p in op.get("parameters", [])}
        assert names == {p.name for p in route.params}
        assert set(re.findall(r"{(\w+)}", route.path)) <= names
        assert op["responses"]["200"]["content"][route.media_type]["schema"] == route.response
        if route.json_body is not None:
            assert op["requestBody"]["content"]["application/json"]["schema"] == route.json_body
        assert ("bearer" in json.dumps(op["security"])) == (route.permission is not None)
    assert len({r.operation_id for r in ROUTES}) == len(ROUTES)


def test_permissions_are_the_rpc_ones():
    by_id = {r.operation_id: r for r in ROUTES}
    assert by_id["enqueue"].needs({"topic": "t"}) == Permission.produce("t")
    assert by_id["dequeue"].needs({"topic": "t", "group": "g"}) == Permission.consume("t", "g")
    assert by_id["dequeue"].needs({"topic": "t"}) == Permission.consume("t", None)
    assert by_id["commit"].needs({"topic": "t", "group": "g"}) == Permission.consume("t", "g")
    assert by_id["status"].needs({}) == Permission.admin()
    assert by_id["topics"].needs({}) is None
    assert by_id["openapi"].permission is None


@settings(max_examples=100)
@given(
    topics=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=16, unique=True),
    queues=st.lists(st.integers(0, 1 << 31), min_size=1, max_size=8),
    nonce=st.binary(min_size=16, max_size=16),
)
def test_a_transaction_handle_round_trips_and_binds_its_topics_to_the_txn_id(topics, queues, nonce):
    topics = sorted(topics)
    parts = tuple((topics[i % len(topics)], q) for i, q in enumerate(queues))
    handle = Handle(nonce.hex(), tuple(topics), parts)
    text = handle.encode()
    assert re.fullmatch(r"[A-Za-z0-9_-]+", text)
    back = Handle.decode(text)
    assert back == handle and back.txn == handle.txn and len(back.txn) == 32
    # Another topic set (or nonce) is another transaction: an edited handle decides nothing
    # of the original.
    assert Handle(nonce.hex(), (*topics, "~extra"), parts).txn != handle.txn
    assert by_id_route("txn_commit").needs_all({"id": text}) == tuple(
        Permission.produce(t) for t in topics
    )


@pytest.mark.parametrize(
    "text", ["", "x", "e30", "eyJuIjoiMCJ9", Handle("0" * 32, ("b", "a"), (("a", 0),)).encode()]
)
def test_anything_but_a_handle_is_no_such_transaction(text):
    with pytest.raises(Problem) as info:
        Handle.decode(text)
    assert (info.value.status, info.value.code) == (404, "not_found")


def by_id_route(operation: str):
    return next(r for r in ROUTES if r.operation_id == operation)


CONFIG = '[[store]]\nid = 1\naddr = "127.0.0.1:7101"\ndata = "s1"\n'


@pytest.mark.parametrize(
    ("origins", "want"),
    [
        ('["https://App.example.com", "http://localhost:5173"]', None),
        ('["*"]', None),
        ('["http://[::1]:8080"]', None),
        ('"https://app.example.com"', "a list of origins"),
        ('["https://app.example.com/"]', "no path"),
        ('["app.example.com"]', "no path"),
        ('["ftp://x"]', "no path"),
        ("[1]", "a list of origins"),
    ],
)
def test_cors_origins_are_origins_or_a_star(origins, want):
    text = CONFIG + f"[gateway]\ncors_origins = {origins}\n"
    if want is None:
        cfg = parse_config(text)
        assert cfg.gateway.cors_origins == tuple(o.lower() for o in json.loads(origins))
        assert parse_config(dump_config(cfg)).gateway == cfg.gateway  # round-trips
    else:
        with pytest.raises(ConfigError, match=want):
            parse_config(text)
    assert parse_config(CONFIG).gateway.cors_origins == ()  # default: no CORS at all


def test_cors_allows_only_its_origins_case_insensitively():
    cors = Cors(("https://app.example.com",))
    assert cors.allows("https://APP.example.com")
    assert not cors.allows("https://evil.example.com")
    assert not cors.allows("https://app.example.com.evil.net")
    assert not cors.allows(None)
    assert Cors(("*",)).allows("http://anything:1")


@given(
    topic=st.text(min_size=1, max_size=30),
    queue=st.integers(0, 1 << 31),
    offset=st.none() | st.integers(0, (1 << 63) - 1),
    duplicate=st.booleans(),
)
def test_the_single_enqueue_answer_is_the_json_of_its_ack(topic, queue, offset, duplicate):
    sid = None if offset is not None else f"{topic}/{queue}/7"
    ack = Ack(topic, queue, offset, duplicate, sid)
    assert ack_bytes(ack) == json.dumps(ack_json(ack)).encode()
