"""phxq-only enqueue benchmarks (no peer): ``bench.run_all --systems phxq`` under its old name.

    .venv/bin/python -m bench.enqueue [--count 3000] [--seconds 4] [--levels 1,16,64,256]
                                      [--groups 16] [--out bench/results]

Takes every option of ``python -m bench.run_all`` (see its ``--help``).
"""

from __future__ import annotations

import sys

from bench import run_all


def main() -> int:
    return run_all.main(["--systems", "phxq", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
