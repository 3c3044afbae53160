"""Errors a user can act on. The CLI prints their message as is, without a traceback."""


def json_error(message: str, kind: str, exit_code: int) -> dict:
    """The one JSON document a command given --json prints when it fails (the README's JSON section)."""
    return {"error": message, "type": kind, "exit_code": exit_code}


class FmnistError(Exception):
    """Something went wrong that the user can fix; `str(err)` says what and how."""

    exit_code = 1


class UsageError(FmnistError):
    """A bad option value, an unknown name, a malformed spec."""

    exit_code = 2


class DataError(FmnistError):
    """The Fashion-MNIST files are missing, truncated or corrupt."""

    exit_code = 2


class RunNotFound(FmnistError):
    """No run (or comparison) matches what the user asked for."""

    exit_code = 2


class BrokenRecord(FmnistError):
    """A run or comparison the user named is damaged (a hand edit, a crash, a full disk)."""

    exit_code = 2


class Busy(FmnistError):
    """Another process is training what this command would change (a comparison being resumed)."""

    exit_code = 2


class StorageError(FmnistError):
    """The runs directory cannot be written (permissions, disk full) or a run file is unreadable."""

    exit_code = 1


class ClusterError(FmnistError):
    """The Ray cluster refuses this client, cannot start, or lost a worker. (An address that leads to
    no cluster, unreadable or where nothing answers, is a UsageError: the user mistyped it.)"""

    exit_code = 1
