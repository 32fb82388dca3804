"""The ``phxq`` command line: a thin click skin over the library (STYLE.md §12)."""

from __future__ import annotations

import click

from phxq import __version__


@click.group()
@click.version_option(__version__, prog_name="phxq")
def cli() -> None:
    """phxq: a strongly consistent distributed queue on Multi-Paxos."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
