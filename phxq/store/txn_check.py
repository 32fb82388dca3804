"""Check-back: asking a producer group whether a transaction it left undecided committed.

``[[producer_group]] check`` is either

- ``"http(s)://..."``: the home group's master POSTs ``{"txn", "producer_group",
  "prepared_at"}`` as JSON, with headers ``X-Phxq-Txn`` and ``X-Phxq-Producer-Group`` and,
  with ``signing_secret_file``, a ``Phxq-Signature`` exactly like a consumer push
  (:mod:`phxq.security.signing`: the handler verifies it the same way). A 2xx answer whose
  body is ``committed``, ``rolled_back`` or ``unknown`` (plain text, or JSON
  ``{"state": ...}``) is that answer; anything else (other status, timeout, garbage) is
  ``unknown``;
- ``"package.module:function"``: called with the transaction id (sync functions in a thread),
  returning one of the three strings (or True / False for committed / rolled back).

``unknown`` makes the store ask again later (backoff up to 30 s) until the producer group's
``max_age``, when it rolls back.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from typing import Any, Final

import aiohttp

from phxq.config import ClusterConfig
from phxq.consumer.handlers import resolve_callable
from phxq.security.signing import SIGNATURE_HEADER, read_secret, sign

log = logging.getLogger("phxq.txn")

ANSWERS: Final = ("committed", "rolled_back", "unknown")
DEFAULT_MAX_AGE: Final = 600.0  # transactions without a configured producer group


class CheckBack:
    """The producer groups' check handlers of a cluster config."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self._groups = {g.name: g for g in cluster.producer_groups}
        self._session: aiohttp.ClientSession | None = None
        self._secrets: dict[str, bytes | None] = {}

    def has_handler(self, producer_group: str | None) -> bool:
        spec = self._groups.get(producer_group or "")
        return spec is not None and spec.check is not None

    def max_age(self, producer_group: str | None) -> float:
        spec = self._groups.get(producer_group or "")
        return DEFAULT_MAX_AGE if spec is None else spec.max_age

    async def ask(self, producer_group: str | None, txn: str, prepared_at: float) -> str:
        """The handler's answer: ``committed``, ``rolled_back`` or ``unknown``."""
        spec = self._groups.get(producer_group or "")
        if spec is None or spec.check is None:
            return "unknown"
        try:
            async with asyncio.timeout(spec.check_timeout):
                if spec.check.startswith(("http://", "https://")):
                    return await self._http(spec, txn, prepared_at)
                return _answer(await self._call(spec.check, txn))
        except TimeoutError:
            log.warning("transaction %s: check %s timed out", txn, spec.check)
        except Exception as exc:  # the handler's failure is an unknown answer, never ours
            log.warning("transaction %s: check %s failed: %s", txn, spec.check, exc)
        return "unknown"

    async def _call(self, spec: str, txn: str) -> Any:
        function = resolve_callable(spec)
        if inspect.iscoroutinefunction(function):
            return await function(txn)  # type: ignore[arg-type]
        return await asyncio.to_thread(function, txn)  # type: ignore[arg-type]

    async def _http(self, spec: Any, txn: str, prepared_at: float) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = json.dumps(
            {"txn": txn, "producer_group": spec.name, "prepared_at": prepared_at}
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Phxq-Txn": txn,
            "X-Phxq-Producer-Group": spec.name,
        }
        if spec.name not in self._secrets:
            path = spec.signing_secret_file
            self._secrets[spec.name] = None if path is None else read_secret(path)
        secret = self._secrets[spec.name]
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(secret, headers, body, time.time())
        async with self._session.post(
            spec.check, data=body, headers=headers, allow_redirects=False
        ) as response:
            text = (await response.read()).decode("utf-8", "replace").strip()
            if not 200 <= response.status < 300:
                return "unknown"
        if text.startswith("{"):
            try:
                text = str(json.loads(text).get("state", ""))
            except (ValueError, AttributeError):
                return "unknown"
        return _answer(text)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _answer(value: Any) -> str:
    if value is True:
        return "committed"
    if value is False:
        return "rolled_back"
    return value if value in ANSWERS else "unknown"
