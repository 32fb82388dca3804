"""phxq.net.loop.run runs a coroutine on uvloop when it is installed."""

from __future__ import annotations

import asyncio

from phxq.net import loop


def test_run_returns_the_result_on_the_preferred_loop() -> None:
    async def main() -> str:
        return type(asyncio.get_running_loop()).__module__

    module = loop.run(main())
    assert module.startswith("uvloop") == loop.uvloop_available()
