"""``python -m moechat.server``: the ``moechat-server`` command line, from the same Rust code.

It takes exactly the flags and subcommands of the Rust binary (see ``--help``).
"""

from __future__ import annotations

import sys

from . import _moechat


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns its exit code."""
    args = ["moechat-server", *(sys.argv[1:] if argv is None else argv)]
    try:
        return _moechat.cli_main(args)
    except KeyboardInterrupt:
        # The Rust side already shut down gracefully on SIGINT; Python saw it too.
        return 0


if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)
