"""Reading one TOML table of the cluster file (for :mod:`phxq.config.parse` and
:mod:`phxq.config.secure`): typed getters with defaults, the value rules, and errors that
name the file and the key."""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Final

from phxq.config.model import DEFAULTS, ConfigError, _split_addr, parse_duration, parse_size


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


class _Table:
    """One TOML table being read: typed getters with defaults, and the error context."""

    def __init__(self, source: str, path: str, kind: str, raw: object) -> None:
        self.source, self.path, self.kind = source, path, kind
        if not isinstance(raw, dict):
            self.fail(f"expected a table, got {_show(raw)}")
        self.raw: dict[str, Any] = raw  # type: ignore[assignment]
        self.read: set[str] = set()

    def fail(self, problem: str, key: str | None = None) -> None:
        where = self.path if key is None else f"{self.path}.{key}" if self.path else key
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{self.source}: {prefix}{problem}", {"key": where})

    def get(self, key: str, required: bool = False) -> Any:
        self.read.add(key)
        if key in self.raw:
            return self.raw[key]
        if required:
            self.fail("required key is missing", key)
        return DEFAULTS.get(f"{self.kind}.{key}")

    def convert(self, key: str, what: str, convert: Any, required: bool = False) -> Any:
        value = self.get(key, required)
        if value is None:
            return None
        try:
            return convert(value)
        except ValueError as exc:
            self.fail(f"{exc.args[0] if exc.args else what}, got {_show(value)}", key)

    def integer(self, key: str, minimum: int = 1, required: bool = False) -> Any:
        def check(value: object) -> int:
            if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
                return value
            raise ValueError(
                "expected a positive integer"
                if minimum == 1
                else f"expected an integer >= {minimum}"
            )

        return self.convert(key, "", check, required)

    def text(self, key: str, pattern: re.Pattern[str] | None = None, required: bool = False) -> Any:
        def check(value: object) -> str:
            if isinstance(value, str) and value and (pattern is None or pattern.fullmatch(value)):
                return value
            raise ValueError(_TEXT_RULES.get(pattern, "expected a non-empty string"))

        return self.convert(key, "", check, required)

    def choice(self, key: str, options: tuple[str, ...]) -> Any:
        def check(value: object) -> str:
            if isinstance(value, str) and value in options:
                return value
            raise ValueError("expected one of " + ", ".join(_show(o) for o in options))

        return self.convert(key, "", check)

    def duration(self, key: str, positive: bool = True) -> Any:
        seconds = self.convert(key, "", parse_duration)
        if positive and seconds == 0:
            self.fail("must be longer than 0", key)
        return seconds

    def size(self, key: str, zero: bool = False) -> Any:
        size = self.convert(key, "", parse_size)
        if size == 0 and not zero:
            self.fail("must be larger than 0", key)
        return size

    def addr(self, key: str, required: bool = False) -> Any:
        def check(value: object) -> str:
            if not isinstance(value, str):
                raise ValueError('expected "host:port"')
            _split_addr(value)
            return value

        return self.convert(key, "", check, required)

    def file(self, key: str, base_dir: Path | None, required: bool = False) -> Path | None:
        """A file path, resolved against ``base_dir`` when relative (like ``data``)."""
        text = self.text(key, required=required)
        if text is None:
            return None
        path = Path(os.path.expanduser(text))
        if base_dir is not None and not path.is_absolute():
            path = Path(os.path.normpath(base_dir / path))
        return path

    def rate(self, key: str) -> Any:
        def check(value: object) -> float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rate = float(value)
                if math.isfinite(rate) and rate > 0:
                    return rate
            raise ValueError("expected a positive number per second")

        return self.convert(key, "", check)

    def done(self) -> None:
        for key in self.raw:
            if key not in self.read:
                near = difflib.get_close_matches(key, sorted(self.read), n=1)
                hint = f' (did you mean "{near[0]}"?)' if near else ""
                self.fail(f"unknown key{hint}", key)


_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")
_HANDLER_RE: Final = re.compile(
    r"https?://[^\s/?#]+\S*|[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
)
_DIGEST_RE: Final = re.compile(r"[0-9a-f]{64}")
_TEXT_RULES: Final[dict[re.Pattern[str] | None, str]] = {
    _DIGEST_RE: "expected 64 lowercase hex digits (the SHA-256 of the token)",
    _NAME_RE: "expected a name of 1-249 letters, digits, '.', '_' or '-'",
    _HANDLER_RE: 'expected "http(s)://host/path" or "package.module:function"',
}
