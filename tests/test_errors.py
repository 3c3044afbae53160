"""User errors in what is typed: bad and unparsable option values, --debug, path-like run names and
fuzzed options. Each must end in a clean message on stderr, the right exit code and no traceback,
and a refused command creates nothing on disk."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import TINY, assert_clean_error, fmnist, invoke, texts, tree


# --- bad option values -------------------------------------------------------------------------

BAD_OPTIONS = [
    (["--epochs", "0"], "--epochs"),
    (["--hidden", "100,abc"], "--hidden"),
    (["--dropout", "1.5"], "--dropout"),
    (["--optimizer", "adamx"], "Unknown optimizer"),
    (["--optimizer", "sgd:lr=-1"], "learning rate"),
    (["--activation", "softmaxx"], "Unknown activation"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--val-size", "1"], "--val-size"),
    (["--limit", "3"], "--limit"),
    (["--learning-rate", "0"], "learning rate"),
    (["--backend", "torch"], "backend"),
    (["--engine", "fast"], "--engine"),
]


@pytest.mark.parametrize("args,mentions", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option_values_are_one_clean_message(args, mentions, runs_dir):
    assert_clean_error(invoke("train", *args), 2, mentions)
    assert not runs_dir.exists(), "a refused command must not create the runs folder"


@pytest.mark.parametrize("args", [a for a, _ in BAD_OPTIONS[:7]], ids=[" ".join(a) for a, _ in BAD_OPTIONS[:7]])
def test_bad_option_values_in_a_real_process(args, runs_dir):
    # What a user sees: the message alone on stderr, nothing on stdout. Refused before TensorFlow starts.
    result = fmnist("train", *args, timeout=60)
    assert_clean_error(result, 2)
    assert result.stdout == ""
    assert not runs_dir.exists()


@pytest.mark.parametrize("args", [["--epochs", "abc"], ["--dropout", "x"], ["--nope"]])
def test_unparsable_values_are_usage_errors_without_traceback(args):
    # Typer's own parsing errors: exit 2 and a usage hint, no traceback.
    result = fmnist("train", *args, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert "Usage:" in result.stderr or "Error" in result.stderr


@pytest.mark.parametrize("command", ["compare", "summary"])
def test_bad_options_on_other_commands(command):
    args = ["sgd"] if command == "compare" else []
    assert_clean_error(invoke(command, *args, "--hidden", "100,abc"), 2, "--hidden")
    assert_clean_error(invoke(command, *args, "--dropout", "1.5"), 2, "--dropout")


def test_debug_flag_shows_the_traceback():
    result = fmnist("--debug", "train", "--epochs", "0", timeout=60)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "UsageError" in result.stderr
    env_result = fmnist("train", "--epochs", "0", env={"FMNIST_DEBUG": "1"}, timeout=60)
    assert "Traceback" in env_result.stderr


# --- path-like run names -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../x", "../x", "x/../../y", "/tmp/abs", ".hidden", "a/b", "..", "x" * 65, ""])
def test_path_like_run_names_are_refused(tmp_path, runs_dir, name):
    before = tree(tmp_path)
    assert_clean_error(invoke("train", *TINY, "--name", name), 2, "Invalid run name")
    assert tree(tmp_path) == before, "nothing may be created anywhere"
    if name == "../../x":   # and once in a real process, from inside a folder where ../../x would land
        cwd = tmp_path / "a" / "b"
        cwd.mkdir(parents=True)
        result = fmnist("train", *TINY, "--name", name, "--runs-dir", "runs", cwd=cwd, timeout=60)
        assert_clean_error(result, 2, "Invalid run name")
        assert tree(tmp_path) == before | {"a", "a/b"}


# --- fuzzed options: never a traceback ---------------------------------------------------------

VALUE = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-10**12, max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "1", "-1", "1e6", "nan", "inf", "-0", "0.5", "100,abc", "300,100", "sgd:lr=0.1",
                     "adam:momentum=0.9", "relu", "sigmoid", "", " ", "--help", "1,2,3,4,5,6,7,8,9"]),
)
OPTION_NAMES = ["--epochs", "--hidden", "--dropout", "--batch-size", "--learning-rate", "--optimizer",
                "--activation", "--val-size", "--limit"]
SUMMARY_OPTIONS = ["--hidden", "--dropout", "--activation"]


def _known_bug(name: str, value: str) -> bool:
    """parse_hidden accepts any str.isdigit() text, and int() refuses some of it ('²'): known, reported
    (see test_hidden_with_superscript_digits_is_a_usage_error)."""
    return name == "--hidden" and any(c.isdigit() and not c.isdecimal() for c in value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(options=st.dictionaries(st.sampled_from(OPTION_NAMES), VALUE, max_size=5),
       command=st.sampled_from(["train", "summary"]))
def test_random_option_values_never_crash(tmp_path, options, command):
    empty = tmp_path / "no-data"   # train's guard: valid options end in the data error, nothing trains
    empty.mkdir(exist_ok=True)
    args: list[str] = [command]
    for name, value in options.items():
        if command == "summary" and name not in SUMMARY_OPTIONS:
            continue
        if _known_bug(name, value):
            continue
        args += [name, value]
    if command == "train":
        args += ["--data-dir", str(empty)]
    result = invoke(*args)
    out, err = texts(result)
    assert result.exit_code in (0, 2), f"{args}: exit {result.exit_code}\n{out}\n{err}"
    assert "Traceback" not in out + err and "Unexpected error" not in out + err, f"{args}\n{out}\n{err}"
    assert (out + err).strip(), args
    if command == "train":
        assert result.exit_code == 2, f"{args}\n{out}"   # a value is never taken for --help
        if "not found" in err:   # every option was valid: the guard stopped it
            assert str(empty) in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_hidden_with_superscript_digits_is_a_usage_error():
    assert_clean_error(invoke("summary", "--hidden", "²"), 2, "--hidden")


# --- --json: a failure still prints one JSON document --------------------------------------------

JSON_FAILURES = [
    (["evaluate", "nosuch", "--json"], "RunNotFound", 2, "No run 'nosuch'"),
    (["train", "--epochs", "0", "--json"], "UsageError", 2, "--epochs"),
    (["summary", "--hidden", "abc", "--json"], "UsageError", 2, "--hidden"),
    (["train", "--epochs", "abc", "--json"], "UsageError", 2, "--epochs"),   # Click's parsing
    (["train", "--nope", "--json"], "UsageError", 2, "--nope"),
    (["trian", "--json"], "UsageError", 2, "trian"),
    (["runs", "rm", "--json"], "UsageError", 2, "Name the runs"),
]


@pytest.mark.parametrize("args,kind,code,mentions", JSON_FAILURES, ids=[" ".join(a) for a, *_ in JSON_FAILURES])
def test_json_failures_print_a_json_error(args, kind, code, mentions, runs_dir):
    # A script reading stdout learns what went wrong; stderr still says it to a person.
    import json

    result = invoke(*args)
    assert result.exit_code == code
    doc = json.loads(result.stdout)
    assert doc["type"] == kind and doc["exit_code"] == code and mentions in doc["error"]
    assert mentions in result.stderr and "Traceback" not in result.stderr


def test_json_error_in_a_real_process_and_only_with_json(runs_dir):
    import json

    result = fmnist("evaluate", "nosuch", "--json", timeout=60)
    assert result.returncode == 2 and json.loads(result.stdout)["type"] == "RunNotFound"
    result = fmnist("evaluate", "nosuch", timeout=60)   # without --json stdout stays empty
    assert result.returncode == 2 and result.stdout == ""


@pytest.mark.parametrize("args,option", [(["compare", "--show", "a", "--show", "b"], "--show"),
                                         (["train", "-e", "2", "--epochs=3"], "--epochs"),
                                         (["runs", "-n", "3", "--last", "4"], "--last")])
def test_an_option_given_twice_is_refused_not_half_dropped(args, option, runs_dir):
    # Click kept the last value and dropped the first without a word.
    result = fmnist(*args, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == ""
    assert f"{option} is given 2 times; give it once" in " ".join(result.stderr.replace("│", " ").split())


def test_options_that_collect_and_values_like_options_are_not_repeats(runs_dir):
    from fmnist_cli.cli import _refuse_repeated   # noqa: F401  (the rule lives there)

    result = invoke("summary", "--hidden", "10", "--json")
    assert result.exit_code == 0
    result = invoke("train", "--name", "--epochs", "--epochs", "1")   # --name's value looks like an option
    assert "given 2 times" not in result.output
