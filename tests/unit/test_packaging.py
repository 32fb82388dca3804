"""Dependencies: every core one is used by the product, and benchmark-only ones stay in the
``bench`` extra (the product imports them only when a benchmark runs)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

from phxq.errors import BadArgument

ROOT = Path(__file__).resolve().parents[2]
MODULE = {"prometheus-client": "prometheus_client", "tomli-w": "tomli_w"}


def imported_top_level_modules() -> set[str]:
    found = set()
    for path in (ROOT / "phxq").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


def test_every_core_dependency_is_imported_by_the_product() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=;! \[]", d, maxsplit=1)[0] for d in project["dependencies"]]
    used = imported_top_level_modules()
    unused = [n for n in names if MODULE.get(n, n.replace("-", "_")) not in used]
    assert unused == [], f"core dependencies nothing imports: {unused}"
    assert "hdrhistogram" in " ".join(project["optional-dependencies"]["bench"])


def test_the_product_runs_without_the_bench_extra_and_a_benchmark_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "hdrh", None)  # as if hdrhistogram were not installed
    monkeypatch.setitem(sys.modules, "hdrh.histogram", None)
    monkeypatch.delitem(sys.modules, "phxq.benchmark", raising=False)
    from phxq import benchmark

    with pytest.raises(BadArgument, match=r"pip install 'phxq\[bench\]'"):
        benchmark._histogram()
