"""Every example marked ``<!-- runnable -->`` in README.md and docs/*.md runs as written against
a live ``phxq dev`` (secure, as the README starts it), twice in a row.

"As written" means: from a directory holding ``phxq-data`` (as after the README's first
command) and a copy of its ``cluster.toml`` (the file docs/security.md's commands read), with ``.venv/bin/`` standing for this interpreter's scripts and the dev cluster's
ports (7101..7103, 7301) for the free base port this test gives ``phxq dev``. docs/http-api.md's
curl examples have their own test (tests/integration/test_gateway.py)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phxq.devcluster import (
    CONSUMER_METRICS_OFFSET,
    DEV_BASE_PORT,
    GATEWAY_PORT_OFFSET,
    PortInUse,
    check_ports_free,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUNNABLE = re.compile(r"^<!-- runnable -->\n```(sh|python)\n(.*?)^```", re.S | re.M)


def runnable_blocks() -> list[tuple[str, str, str]]:
    """``(where, language, text)`` of every marked block."""
    out = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for lang, text in RUNNABLE.findall(doc.read_text()):
            out.append((doc.name, lang, text))
    return out


def free_dev_base() -> int:
    """A base port whose whole dev range (stores .. consumer metrics) is free now, below the
    kernel's ephemeral range, away from a running ``phxq dev`` (7101..)."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20000, 32000 - CONSUMER_METRICS_OFFSET)
        wanted = [("port", f"127.0.0.1:{base + i}") for i in range(CONSUMER_METRICS_OFFSET + 1)]
        try:
            check_ports_free(wanted)
        except PortInUse:
            continue
        return base
    raise AssertionError("no free dev port range found")


def as_here(text: str, base: int) -> str:
    """The example with this test's ports and interpreter."""
    bindir = str(Path(sys.executable).parent)
    text = text.replace(".venv/bin/", bindir + "/")
    for offset in (0, 1, 2, GATEWAY_PORT_OFFSET):
        text = text.replace(f"127.0.0.1:{DEV_BASE_PORT + offset}", f"127.0.0.1:{base + offset}")
    return text


def test_the_runnable_examples_of_the_readme_and_docs_run_twice_against_phxq_dev(
    tmp_path: Path,
) -> None:
    blocks = runnable_blocks()
    langs = {lang for _, lang, _ in blocks}
    assert len(blocks) >= 4 and langs == {"sh", "python"}, "the docs lost their examples"
    base = free_dev_base()
    dev = subprocess.Popen(
        [sys.executable, "-m", "phxq", "dev", "--base-port", str(base)],
        cwd=tmp_path,  # data in ./phxq-data, as the README runs it
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert dev.stdout is not None
        banner = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "Ctrl-C to stop" not in "".join(banner):
            line = dev.stdout.readline()
            if not line:
                break
            banner.append(line)
        assert "Ctrl-C to stop" in "".join(banner), "".join(banner)
        assert f"metrics of store 1: http://127.0.0.1:{base + 300}/metrics" in "".join(banner)
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        # docs/security.md's commands read "cluster.toml" from where they run.
        (tmp_path / "cluster.toml").write_text(
            (tmp_path / "phxq-data" / "cluster.toml").read_text()
        )
        for run in (1, 2):
            for where, lang, text in blocks:
                code = as_here(text, base)
                cmd = (
                    ["bash", "-euo", "pipefail", "-c", code]
                    if lang == "sh"
                    else [sys.executable, "-c", code]
                )
                done = subprocess.run(
                    cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
                )
                assert done.returncode == 0, (
                    f"run {run}, {where} {lang} block failed ({done.returncode}):\n{text}\n"
                    f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
                )
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
