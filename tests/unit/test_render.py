"""What ``phxq tail`` and the admin tables print (phxq.render), without a cluster."""

from __future__ import annotations

import json

import pytest

from phxq.client import Message
from phxq.errors import BadArgument
from phxq.render import cell, check_template, message_bytes, message_json, size

MSG = Message("orders", 3, 1 << 20, b"caf\xc3\xa9", None, {"b": "2", "a": "1"}, 1_700_000_000.25)


def test_default_output_is_the_payload_bytes_as_they_are() -> None:
    assert message_bytes(MSG) == b"caf\xc3\xa9\n"
    binary = Message("t", 0, 0, b"\xff\x00", "k", {}, 0.0)
    assert message_bytes(binary) == b"\xff\x00\n"


def test_a_template_fills_every_field_and_understands_escapes() -> None:
    line = message_bytes(MSG, "{queue}@{offset}\\t{key}|{headers}|{payload}|{size}|{enqueued_at}")
    assert line.decode() == "3@1048576\t|a=1,b=2|café|5|2023-11-14T22:13:20.250+00:00\n"
    assert message_bytes(MSG, "a\\\\nb") == b"a\\nb\n"


@pytest.mark.parametrize("bad", ["{nope}", "{payload", "{0}"])
def test_a_bad_template_is_a_bad_argument_naming_the_fields(bad: str) -> None:
    with pytest.raises(BadArgument):
        check_template(bad)


def test_json_is_binary_safe() -> None:
    row = json.loads(message_json(Message("t", 0, 7, b"\xff", None, {}, 1.0)))
    assert row["payload_base64"] == "/w==" and row["payload"] is None and row["key"] is None


def test_cells_and_sizes_never_show_python_reprs() -> None:
    assert [cell(None), cell(b"x\xff"), cell(True), cell(2.50)] == ["-", "x\\xff", "yes", "2.5"]
    assert [size(512), size(1536), size(3 << 20), size(None)] == [
        "512 B",
        "1.5 KiB",
        "3.0 MiB",
        "-",
    ]
