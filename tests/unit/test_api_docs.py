"""docs/client-api.md is generated from the public classes, so it cannot drift from them."""

from __future__ import annotations

from pathlib import Path

import phxq
from tools.apidoc import CLASSES, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "client-api.md"


def test_docs_client_api_md_is_current() -> None:
    assert DOC.read_text() == render(), (
        "docs/client-api.md is stale: run `python -m tools.apidoc > docs/client-api.md`"
    )


def test_every_public_call_and_error_has_a_docstring() -> None:
    text = render()
    assert "(no docstring)" not in text
    for name in CLASSES:
        assert f"## `phxq.{name}`" in text
    for name in phxq.__all__:
        obj = getattr(phxq, name)
        if isinstance(obj, type) and issubclass(obj, phxq.PhxqError):
            assert f"`phxq.{name}`" in text, name
