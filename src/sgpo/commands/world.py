"""`python -m sgpo.commands.world --out DIR [--quick] [--seed 0] [--overwrite] [--no-progress]`: the
strategy world's stages up to the warm-up's held-out evaluation, with `sgpo demo`'s options (the
folder's layout: `sgpo.world.pipeline`). `sgpo demo` and `sgpo experiment` finish such a folder.
"""

from __future__ import annotations

import sys

from sgpo.commands.demo import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, prog="python -m sgpo.commands.world", methods=())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
