"""Help and option parsing. Options' defaults skip Typer's pydantic adapters (fmnist_cli/coercion.py):
every default of every command comes out exactly as Typer's own coercion gives it, typed values still
get Typer's checks and messages, and a command given only defaults never imports pydantic. Every help
page fits an 80-column terminal."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from fmnist_cli.cli import app
from helpers import invoke


def _params():
    """Every (command path, parameter) of the CLI, as Typer builds them."""
    root = typer.main.get_command(app)
    found = []

    def walk(cmd, path, ctx):
        for param in cmd.get_params(ctx):
            found.append((path, param))
        if hasattr(cmd, "list_commands"):   # Typer's own copy of click's Group
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), f"{path} {name}".strip(), ctx)

    ctx = typer.Context(root)
    walk(root, "", ctx)
    return found


def test_every_default_comes_out_as_typer_coerces_it():
    from typer._coercion import build_runtime_param

    ctx = typer.Context(typer.main.get_command(app))
    checked = 0
    for path, param in _params():
        if not hasattr(param, "type_descriptor"):
            continue
        default = param.get_default(ctx, call=True)
        ours = param.get_runtime_param().coerce(default, param=param, ctx=ctx)
        typers = build_runtime_param(param.type_descriptor).coerce(default, param=param, ctx=ctx)
        assert (ours, type(ours)) == (typers, type(typers)), (path, param.name)
        checked += 1
    assert checked > 50


def test_typed_values_still_get_typers_checks():
    result = invoke("train", "--epochs", "abc")
    assert result.exit_code == 2 and "valid integer" in result.output
    result = invoke("summary", "--dropout", "x")
    assert result.exit_code == 2 and "valid number" in result.output


def test_defaults_alone_never_import_pydantic():
    code = ("import sys; from typer.testing import CliRunner; from fmnist_cli.cli import app; "
            "r = [CliRunner().invoke(app, a) for a in (['data'], ['summary'], ['runs'], ['compare', '--list'])]; "
            "assert all(x.exit_code == 0 for x in r), [x.output for x in r]; "
            "assert 'pydantic' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("value", ["7", "0"])
def test_a_typed_int_is_an_int(value):
    import json

    result = invoke("data", "--split-seed", value, "--limit", "100", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["split_seed"] == int(value)


HELP_PAGES = ["", "train", "evaluate", "report", "summary", "compare", "data", "runs", "runs rm",
              "export", "export tensorboard"]


@pytest.mark.parametrize("page", HELP_PAGES)
def test_help_fits_an_80_column_terminal(page, monkeypatch):
    """No help text cut short with '…', no example broken over two lines, no prose paragraph broken
    where the source wrapped it (Typer's rich mode keeps a docstring's line breaks)."""
    monkeypatch.setenv("COLUMNS", "80")
    result = invoke(*page.split(), "--help")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert not [line for line in lines if "…" in line]
    assert all(len(line.rstrip()) <= 80 for line in lines)
    for line, after in zip(lines, lines[1:]):
        if line.lstrip().startswith(("fmnist ", "# ")):   # an example (or its comment) ends its own line
            assert not after.strip() or after.startswith("   "), (line, after)
    examples = [line for line in lines if line.lstrip().startswith("fmnist ")]
    assert all(line.startswith("   fmnist ") for line in examples), examples   # indented under "Examples:"


@pytest.mark.parametrize("page", HELP_PAGES)
def test_help_shows_no_python_types_or_braces(page):
    """Flags take no <bool>, a list argument is <str>... not <list[str]>, and a required argument is
    DIR in the usage line, not Typer's {DIR}."""
    text = invoke(*page.split(), "--help").output
    assert "<bool>" not in text and "list[" not in text and "{" not in text, text
    if page == "export tensorboard":
        assert "DIR [RUN]..." in text and "<str>..." in text
