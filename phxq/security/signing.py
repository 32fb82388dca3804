"""Signed pushes: how an HTTP handler can tell phxq from anyone else.

Public API::

    SIGNATURE_HEADER = "Phxq-Signature"
    sign(secret, headers, body, now) -> str          # the header's value: "t=<unix>,v1=<hex>"
    verify(secret, headers, body, now, max_age=300) -> bool
    read_secret(path) -> bytes                       # a consumer group's signing_secret_file

The signature is HMAC-SHA256, keyed with the consumer group's secret, over::

    b"phxq-v1\\n" + t + b"\\n"
    + one line "name:value\\n" per X-Phxq-* header, names lower-cased, sorted
    + b"\\n" + body

so the body, the message id, topic, queue, offset, attempt, key and the message's own headers
(all sent as X-Phxq-*) are covered, and ``t`` (the push time, whole seconds) lets a handler
refuse replays older than ``max_age``. docs/security.md has the handler side in ten lines.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from phxq.config.model import ConfigError

SIGNATURE_HEADER: Final = "Phxq-Signature"
MIN_SECRET_BYTES: Final = 16


def _signed(t: str, headers: Mapping[str, str], body: bytes) -> bytes:
    phxq = sorted((k.lower(), v) for k, v in headers.items() if k.lower().startswith("x-phxq-"))
    lines = "".join(f"{k}:{v}\n" for k, v in phxq)
    return f"phxq-v1\n{t}\n{lines}\n".encode() + body


def sign(secret: bytes, headers: Mapping[str, str], body: bytes, now: float) -> str:
    t = str(int(now))
    mac = hmac.new(secret, _signed(t, headers, body), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(
    secret: bytes, headers: Mapping[str, str], body: bytes, now: float, max_age: float = 300.0
) -> bool:
    """True when ``headers`` carry a valid signature of ``body`` no older than ``max_age``."""
    value = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower()), "")
    fields = dict(part.split("=", 1) for part in value.split(",") if "=" in part)
    t, mac = fields.get("t", ""), fields.get("v1", "")
    if not t.isdigit() or abs(now - int(t)) > max_age:
        return False
    good = hmac.new(secret, _signed(t, headers, body), hashlib.sha256).hexdigest()
    return hmac.compare_digest(good, mac)


def read_secret(path: Path) -> bytes:
    """The secret in ``path`` (surrounding whitespace dropped); ``ConfigError`` if unreadable
    or shorter than ``MIN_SECRET_BYTES``."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the signing secret: {exc.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"{path}: a signing secret needs at least {MIN_SECRET_BYTES} bytes")
    return secret
