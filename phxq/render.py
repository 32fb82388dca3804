"""Human and script output of the command line, as functions a Python user can call too.

What ``phxq tail`` prints per message (kcat / ``nats sub`` habits)::

    message_bytes(msg, template=None) -> bytes   # the raw payload, or the template filled in
    message_json(msg) -> str                     # one JSON object; payload base64 + text
    check_template(template)                     # BadArgument naming an unknown {field}

Template fields: ``{topic} {queue} {offset} {key} {headers} {payload} {size} {enqueued_at}``
(ISO 8601, UTC) and ``{enqueued_at_epoch}``; ``\\n``, ``\\t`` and ``\\\\`` are escapes, as in
kcat's ``-f``. A line break follows every message. ``{key}`` of a message without a key is
empty, ``{headers}`` is ``name=value`` pairs joined by ``,`` (kcat's ``%h``), and a payload that is
not UTF-8 is shown with ``\\xNN`` escapes (use ``--json`` for the exact bytes).

Cells of tables (``phxq admin ...``): :func:`cell` (``-`` for nothing, never ``None`` or
``b'...'``) and :func:`size` (``1.5 MiB``).
"""

from __future__ import annotations

import base64
import json
import string
from datetime import UTC, datetime
from typing import Any

from phxq.client.types import Message
from phxq.errors import BadArgument

__all__ = ["FIELDS", "cell", "check_template", "message_bytes", "message_json", "size"]

FIELDS = (
    "topic",
    "queue",
    "offset",
    "key",
    "headers",
    "payload",
    "size",
    "enqueued_at",
    "enqueued_at_epoch",
)
_ESCAPES = {"\\n": "\n", "\\t": "\t", "\\\\": "\\"}


def size(n: int | float | None) -> str:
    """``n`` bytes as ``512 B``, ``1.5 KiB``, ``64.0 MiB``, ``2.0 GiB`` (``-`` for None)."""
    if n is None:
        return "-"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:g} B"


def cell(value: Any) -> str:
    """A table cell: ``-`` for None, text for bytes (escaped where not UTF-8), ``yes``/``no``
    for booleans, a float without noise."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode(errors="backslashreplace")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _unescape(template: str) -> str:
    out, i = [], 0
    while i < len(template):
        pair = template[i : i + 2]
        if pair in _ESCAPES:
            out.append(_ESCAPES[pair])
            i += 2
        else:
            out.append(template[i])
            i += 1
    return "".join(out)


def check_template(template: str) -> None:
    """``BadArgument`` if ``template`` uses a field :data:`FIELDS` lacks or is malformed."""
    try:
        parsed = list(string.Formatter().parse(_unescape(template)))
    except ValueError as exc:
        raise BadArgument(f"format {template!r}: {exc}") from None
    for _, name, _, _ in parsed:
        if name is not None and name not in FIELDS:
            raise BadArgument(
                f"format {template!r}: unknown field {{{name}}}; fields: "
                + " ".join(f"{{{f}}}" for f in FIELDS)
            )


def _fields(msg: Message) -> dict[str, Any]:
    return {
        "topic": msg.topic,
        "queue": msg.queue,
        "offset": msg.offset,
        "key": "" if msg.key is None else msg.key,
        "headers": ",".join(f"{k}={v}" for k, v in sorted(msg.headers.items())),
        "payload": msg.payload.decode(errors="backslashreplace"),
        "size": len(msg.payload),
        "enqueued_at": datetime.fromtimestamp(msg.enqueued_at, UTC).isoformat(
            timespec="milliseconds"
        ),
        "enqueued_at_epoch": msg.enqueued_at,
    }


def message_bytes(msg: Message, template: str | None = None) -> bytes:
    """One message as ``phxq tail`` writes it: the payload's bytes as they are (no template),
    or ``template`` filled in (UTF-8); a line break after either."""
    if template is None:
        return msg.payload + b"\n"
    return (_unescape(template).format(**_fields(msg)) + "\n").encode()


def message_json(msg: Message) -> str:
    """One message as a JSON object: topic, queue, offset, key, headers, enqueued_at (epoch
    seconds), ``payload_base64`` (exact) and ``payload`` (its text, or null if not UTF-8)."""
    row: dict[str, Any] = {"topic": msg.topic, "queue": msg.queue, "offset": msg.offset}
    row |= {"key": msg.key, "headers": msg.headers, "enqueued_at": msg.enqueued_at}
    row["payload_base64"] = base64.b64encode(msg.payload).decode()
    try:
        row["payload"] = msg.payload.decode()
    except UnicodeDecodeError:
        row["payload"] = None
    return json.dumps(row)
