"""The console script's entry point, kept free of imports: a Ctrl-C that lands while Typer, Rich or
the rest of the CLI are still importing ends the command quietly (exit 130), not in a traceback."""

import sys


def main() -> None:
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        raise SystemExit(130) from None
    try:
        cli_main()
    except KeyboardInterrupt:   # between the commands' own handlers: still no traceback
        sys.stderr.write("Interrupted.\n")
        raise SystemExit(130) from None
