"""The console script's entry point, kept free of imports: a Ctrl-C that lands while Typer, Rich or
the rest of the CLI are still importing ends the command quietly (exit 130), not in a traceback."""

import os
import sys

INTERRUPTED = 130


def main() -> None:
    try:
        from .cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:   # while importing, or between the commands' own handlers
        sys.stderr.write("Interrupted.\n")
        _exit_now()
    except SystemExit as done:
        if done.code == INTERRUPTED:
            _exit_now()
        raise


def _exit_now() -> None:
    """After Ctrl-C everything worth keeping is saved: leave without the interpreter's teardown,
    which with TensorFlow loaded takes a second or more, time a user who pressed Ctrl-C twice does
    not want to wait."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    backend = sys.modules.get("fmnist_cli.backend")
    if backend is not None:
        backend.remove_shelters()
    os._exit(INTERRUPTED)


def exit_interrupted() -> None:
    """A second Ctrl-C: say so and leave at once, with the cursor a live display hid shown again."""
    backend = sys.modules.get("fmnist_cli.backend")
    if backend is not None:
        backend.restore_stderr()   # TensorFlow may be loading, with stderr pointed at /dev/null
    try:
        if sys.stdout.isatty():
            sys.stdout.write("\x1b[?25h\n")
        sys.stderr.write("Interrupted.\n")
    except (OSError, ValueError, AttributeError):
        pass
    _exit_now()
