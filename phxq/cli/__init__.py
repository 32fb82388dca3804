"""The ``phxq`` command line: a thin click skin over the library (STYLE.md §12).

Every command parses its arguments, builds a client or a daemon, calls one function
(:mod:`phxq.admin`, :class:`phxq.Client`, :mod:`phxq.devcluster`) and prints the result: human
text by default, ``--json`` for scripts. Any ``phxq.errors`` error prints one line and exits 1.

Where to find the cluster: ``--config FILE`` (or ``PHXQ_CONFIG``), or for the commands that only
talk to stores, ``-s/--servers HOST:PORT,...``.

Layout: :mod:`~phxq.cli.common` (root group, shared options, one-line errors),
:mod:`~phxq.cli.daemons` (store, lock, consumer, gateway, dev), :mod:`~phxq.cli.messages`
(enqueue, cancel-scheduled, tail), :mod:`~phxq.cli.admin` (admin ...), :mod:`~phxq.cli.tools`
(config check, bench).
"""

from phxq.cli import admin, daemons, groups, messages, tools, topics  # noqa: F401 (they register commands)
from phxq.cli.common import cli

__all__ = ["cli", "main"]


def main() -> None:
    """The ``phxq`` entry point."""
    cli()
