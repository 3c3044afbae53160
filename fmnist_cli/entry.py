"""The console script's entry point, kept free of imports: a Ctrl-C that lands while Typer, Rich or
the rest of the CLI are still importing ends the command quietly (exit 130), not in a traceback."""

import contextlib
import os
import sys

INTERRUPTED = 130


def main() -> None:
    try:
        from .cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:   # while importing, or between the commands' own handlers
        sys.stderr.write("Interrupted.\n")
        _json_interrupted()
        _exit_now()
    except SystemExit as done:
        if done.code == INTERRUPTED:
            if _from_ctrl_c(done):
                # Typer's own answer to a Ctrl-C while it parses, before a command's handler: exit
                # 130 in silence. Said here, as everywhere else (a command's own says it first).
                sys.stderr.write("Interrupted.\n")
                _json_interrupted()
            _exit_now()
        _leave(done.code)
    _leave(0)


def _from_ctrl_c(exc: BaseException) -> bool:
    """Whether an exit came straight from a KeyboardInterrupt (Typer: `raise Exit(130) from e`, then
    `sys.exit` in its handler), not from a command that said "Interrupted." (`from None`)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        seen += 1
    return False


def _leave(code) -> None:
    """The command is done and its results are saved: run the exit hooks (temporary folders, Ray's
    shutdown, log flushing), then leave without the interpreter's teardown. With TensorFlow loaded
    that teardown took about 0.7 s, and a Ctrl-C pressed during it killed the process by SIGINT or
    printed a traceback from TensorFlow's exit hook; now a Ctrl-C here just leaves at once, with the
    command's own exit code. Where a thread of ours or a library's is still working, the ordinary
    exit waits for it as it should."""
    import atexit
    import signal
    import threading

    code = 0 if code is None else code
    if not isinstance(code, int):   # SystemExit("message"): print it as Python would
        sys.stderr.write(f"{code}\n")
        code = 1
    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        raise SystemExit(code)
    with contextlib.suppress(ValueError):   # not the main thread: leave the handlers alone
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:   # ignored (nohup, say): stays so
            signal.signal(signal.SIGINT, lambda *_: _exit_now(code))
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    _exit_now(code)


def _exit_now(code: int = INTERRUPTED) -> None:
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
    os._exit(code)


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
    _json_interrupted()
    _exit_now()


def _json_interrupted() -> None:
    """--json: stdout's one document says it too (unless the command's own is out already)."""
    report = sys.modules.get("fmnist_cli.report")
    if report is not None and (report.json_wanted or "--json" in sys.argv[1:]):   # (loaded, the command not begun)
        report.print_json_error("Interrupted.", "Interrupted", INTERRUPTED)
    elif report is None and "--json" in sys.argv[1:]:   # before the command began (Rich not loaded)
        import json

        from .errors import json_error

        with contextlib.suppress(OSError, ValueError):
            sys.stdout.write(json.dumps(json_error("Interrupted.", "Interrupted", INTERRUPTED), indent=2) + "\n")
