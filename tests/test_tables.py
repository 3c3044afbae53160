"""Every table fits the console: rendered at 50, 80, 120 and 200 columns, no line is wider than the
console, every number shown is shown whole, a cut id ends in "…", and at 200 columns every column is
there. Records come from the fake engine (tests/fakes.py) or are built by hand: nothing is trained."""

import io
import json
import random
import re

import pytest
from rich.cells import cell_len
from rich.console import Console

from fmnist_cli import compare as cmp
from fmnist_cli import report
from fmnist_cli.records import (EpochEnd, EpochStart, EvaluationResult, Plan, RunDone, RunResult, Status,
                                Step)
from fmnist_cli.store import RunStore
from helpers import invoke

WIDTHS = (50, 80, 120, 200)
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
# a decimal as the tables write them: 0.8123, 0.8123±0.004, 12.3s
DECIMAL = re.compile(r"(?<![\w.=±])\d+\.\d+(?:±\d+\.\d+)?")


def render(draw, width: int) -> str:
    """What `draw(console)` shows on a terminal `width` columns wide, as plain text."""
    console = Console(width=width, file=io.StringIO(), record=True, force_terminal=True, color_system=None)
    draw(console)
    return console.export_text(styles=False)


def check_fits(text: str, width: int) -> None:
    """No line wider than the console; no number cut (`0.81…`) or split across lines (`0.` / `81`)."""
    for line in text.splitlines():
        assert cell_len(line.rstrip()) <= width, f"{cell_len(line.rstrip())} > {width}:\n{line}\n\n{text}"
        for token in line.split():
            assert not re.fullmatch(r"[\d.,±@s]+…", token), f"a number cut: {token!r}\n{text}"
            assert not re.fullmatch(r"\d+\.|\d+\.\d+±(\d+\.?)?", token), f"a number split: {token!r}\n{text}"


def check_numbers(text: str, whole: set[str]) -> None:
    """Every decimal shown is one of those the widest rendering shows (a folded 0.8123 shows 0.81)."""
    for number in DECIMAL.findall(text):
        assert number in whole, f"{number!r} is not a whole number of the table:\n{text}"


def check_ids(text: str, ids: list[str]) -> None:
    """Each id is shown whole or cut with a trailing "…", never cut silently."""
    tokens = text.split()
    for run_id in ids:
        if run_id in tokens:
            continue
        cut = [t for t in tokens if len(t) > 1 and t.endswith("…") and run_id.startswith(t[:-1])]
        assert cut, f"{run_id} neither whole nor cut with '…':\n{text}"
        assert len(cut[0]) >= 10, f"{run_id} cut to {cut[0]!r}"
    for token in tokens:   # a prefix of an id that does not say it was cut
        for run_id in ids:
            if len(token) >= 10 and token != run_id and run_id.startswith(token):
                pytest.fail(f"{run_id} cut silently to {token!r}:\n{text}")


def headers(text: str) -> str:
    """The header line: the one just above the table's rule."""
    lines = text.splitlines()
    rule = next(i for i, ln in enumerate(lines) if ln.strip() and set(ln.strip()) <= set("━─"))
    return lines[rule - 1]


# --- data -----------------------------------------------------------------------------------------

@pytest.fixture
def runs(runs_dir, fake_engine):
    """Runs of every kind a listing shows: short and long ids, a long config, an evaluated one, an
    interrupted one."""
    assert invoke("train", "--epochs", "3", "--json").exit_code == 0
    out = json.loads(invoke("train", "--epochs", "2", "--hidden", "300,100", "--dropout", "0.2", "--optimizer",
                            "sgd:lr=0.05,momentum=0.9", "--limit", "500", "--activation", "sigmoid", "--json").stdout)
    assert invoke("train", "--epochs", "2", "--name", "a-rather-long-run-name-for-the-book", "--backend", "jax", "--json").exit_code == 0
    fake_engine.stop_after = 1
    assert invoke("train", "--epochs", "3", "--optimizer", "adam", "--json").exit_code == 130
    fake_engine.stop_after = None
    store = RunStore(runs_dir)
    store.record_evaluation(store.root / out["run_id"], "test",
                            {"loss": 0.41234, "accuracy": 0.85432, "evaluated": "2026-01-01T00:00:00", "n": 10000})
    return store.list_runs()


@pytest.fixture(params=[1, 3], ids=["one-seed", "three-seeds"])
def summary(request, runs_dir, fake_engine):
    result = invoke("compare", "sgd", "adam", "rmsprop:lr=0.0005", "--vary", "activation=relu,sigmoid",
                    "--epochs", "6", "--repeats", request.param, "--json")
    assert result.exit_code == 0, result.output
    store = RunStore(runs_dir)
    return cmp.summarize(store, store.load_comparison("latest"))


def evaluation_result(diagonal: int) -> EvaluationResult:
    rng = random.Random(diagonal)
    matrix = [[diagonal if i == j else rng.randint(0, 60) for j in range(10)] for i in range(10)]
    return EvaluationResult(run_id="20260101-120000-rmsprop-sigmoid-a00f", run_dir="/runs/x", split="test",
                            n=sum(map(sum, matrix)), loss=0.41234, accuracy=0.85432,
                            per_class=[{"class": c, "accuracy": 0.9 - i / 100, "n": sum(matrix[i])}
                                       for i, c in enumerate(CLASSES)],
                            confusion_matrix=matrix, classes=CLASSES, evaluated="2026-01-01T00:00:00")


# --- runs -----------------------------------------------------------------------------------------

def test_runs_table_fits_every_width(runs):
    ids = [r.id for r in runs]
    shown = {w: render(lambda c: report.runs_table(runs, c), w) for w in WIDTHS}
    wide = shown[200]
    assert headers(wide).split() == ["id", "when", "config", "val", "acc", "test", "acc", "status", "time"]
    assert {"tf", "jax"} <= set(wide.split())
    assert all(r.id in wide and r.config.short() in wide for r in runs)
    assert "0.8543" in wide and "interrupted" in wide
    whole = set(DECIMAL.findall(wide))
    assert {report.fmt(r.get("best_val_accuracy")) for r in runs} <= whole
    for width, text in shown.items():
        check_fits(text, width)
        check_numbers(text, whole)
        check_ids(text, ids)
        assert len(text.splitlines()) == len(runs) + 2, f"one line per run at {width}:\n{text}"
        assert "status" in headers(text) and "val acc" in headers(text)
    assert "config" in headers(shown[120])
    # the config tells runs apart: the time and when go before it is cut
    for width in (120, 200):
        cut = any(r.config.short(backend=True) not in shown[width] for r in runs)
        assert not cut or not {"time", "when"} & set(headers(shown[width]).split()), (width, shown[width])
    at80 = headers(shown[80])
    assert "time" not in at80 and "when" not in at80 and "config" in at80
    for r in runs:   # ids stay whole while columns can go; only a long --name is cut
        assert (r.id in shown[80].split()) == (len(r.id) <= report.auto_id_width()), shown[80]
    assert any(t.endswith("…") for t in shown[50].split())


def test_the_column_runs_are_sorted_by_stays(runs):
    for sort, column in (("test_acc", "test acc"), ("time", "time")):
        assert column in headers(render(lambda c: report.runs_table(runs, c, sort=sort), 80))


def test_runs_table_drops_an_empty_test_column_first(runs_dir, fake_engine):
    assert invoke("train", "--epochs", "2", "--json").exit_code == 0
    assert invoke("train", "--epochs", "2", "--optimizer", "sgd", "--json").exit_code == 0
    records = RunStore(runs_dir).list_runs()   # none evaluated on the test split
    for width in range(50, 130, 5):
        head = headers(render(lambda c: report.runs_table(records, c), width))
        if "test acc" in head:
            assert all(col in head for col in ("when", "config", "time")), f"{width}: {head}"
    assert "test acc" not in headers(render(lambda c: report.runs_table(records, c), 80))


def test_runs_listing_at_80_columns(runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = invoke("runs")
    assert result.exit_code == 0
    check_fits(result.stdout, 80)
    assert len(result.stdout.splitlines()) == len(runs) + 2
    check_ids(result.stdout, [r.id for r in runs])
    assert all(r.id in result.stdout.split() for r in runs if len(r.id) <= report.auto_id_width())
    monkeypatch.setenv("COLUMNS", "200")   # the width is read per call, not when the module was imported
    assert "when" in headers(invoke("runs").stdout)


def test_json_listing_is_the_same_at_any_width(runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    narrow = invoke("runs", "--json").stdout
    monkeypatch.setenv("COLUMNS", "200")
    assert narrow == invoke("runs", "--json").stdout and json.loads(narrow)[0]["id"] == runs[0].id


# --- compare ----------------------------------------------------------------------------------------

def test_comparison_table_fits_every_width(summary):
    labels = [v.label for v in summary.variants]
    shown = {w: render(lambda c: report.comparison_table(summary, c), w) for w in WIDTHS}
    wide = shown[200]
    columns = ["variant", "loss", "acc", "val loss", "val acc", "best val acc", "s/epoch", "curve", "status"]
    head = headers(wide)
    assert all(col in head for col in columns), head
    assert all(label in wide for label in labels) and "★ " + summary.best_variant in wide
    whole = set(DECIMAL.findall(wide))
    assert report.pm(summary.variants[0].aggregate["final"]["val_accuracy"]) in whole
    for width, text in shown.items():
        check_fits(text.split("★ best:")[0], width)
        check_numbers(text, whole)
        head = headers(text)
        assert "variant" in head and "best val acc" in head and "status" in head
        body = " ".join(text.split())
        for label in labels:   # a label is whole, on one line or wrapped between its words
            assert all(word in body.split() for word in label.split()), f"{label} at {width}:\n{text}"
        assert "completed" in text and "★" in text
    at80 = headers(shown[80])
    assert "val acc" in at80 and "curve" not in at80 and "loss" not in at80.replace("val loss", "")
    if summary.repeats == 1:
        assert all(col in headers(shown[120]) for col in columns)


def test_comparison_table_shows_seeds_where_some_are_missing(runs_dir, fake_engine):
    out = json.loads(invoke("compare", "sgd", "adam", "--epochs", "3", "--repeats", "2", "--json").stdout)
    (runs_dir / out["variants"][1]["runs"][0]["run_id"] / "history.json").unlink()   # a seed lost
    store = RunStore(runs_dir)
    summary = cmp.summarize(store, store.load_comparison("latest"))
    assert any(v.n < v.of for v in summary.variants)
    for width in WIDTHS:
        text = render(lambda c: report.comparison_table(summary, c), width)
        check_fits(text.split("Incomplete:")[0], width)
        assert ("seeds" in headers(text)) == (width >= 80) and "--resume" in text


def test_comparison_footer_wraps_between_words_on_a_terminal(summary):
    for width in (50, 200):
        text = render(lambda c: report.comparison_table(summary, c), width)
        footer = text[text.index("★ best:"):]
        assert all(cell_len(line.rstrip()) <= width for line in footer.splitlines())
        # the curves' span is said only where the curve column is shown
        assert ("Curves span 0.5" in " ".join(footer.split())) == ("curve" in headers(text)), (width, text)
    assert "curve" in headers(text)


# --- live displays ------------------------------------------------------------------------------------

def test_train_display_fits_every_width():
    shown = {}
    for width in WIDTHS:
        def draw(console):
            display = report.TrainDisplay(12, console, plain=False)
            for e in range(1, 4):
                display.on_event(EpochStart(epoch=e, steps=1500))
                display.on_event(Step(step=700, steps=1500))
                display.on_event(EpochEnd(epoch=e, loss=0.5 / e, accuracy=0.8 + e / 100, val_loss=0.55 / e,
                                          val_accuracy=0.79 + e / 100, seconds=3.21, is_best=e == 2))
            console.print(display.renderable())
        shown[width] = render(draw, width)
    whole = set(DECIMAL.findall(shown[200]))
    assert headers(shown[200]).split() == ["epoch", "loss", "acc", "val", "loss", "val", "acc", "time"]
    assert "epoch 3/12" in shown[200] and "700/1500" in shown[200]
    for width, text in shown.items():
        check_fits(text, width)
        check_numbers(text, whole)
        assert "val acc" in headers(text) and "0.8200" in text and "epoch 3/12" in text


def test_compare_display_fits_every_width():
    labels = ["sgd relu", "adam sigmoid", "rmsprop:lr=0.0005 sigmoid 300-100"]
    shown = {}
    for width in WIDTHS:
        def draw(console):
            display = report.CompareDisplay(labels, 3, console, plain=False)
            display.on_event(Plan(runs=9, units=9, epochs=90))
            # best epochs, as engines flag them (a seed's first epoch always is one)
            display.on_event(EpochEnd(variant=labels[0], epoch=3, epochs=10, val_accuracy=0.81234, is_best=True))
            display.on_event(RunDone(variant=0, repeat=0, status=Status.COMPLETED))
            display.on_event(EpochEnd(variant=labels[2], epoch=10, epochs=10, val_accuracy=0.8, is_best=True))
            console.print(display.renderable())
        shown[width] = render(draw, width)
    assert headers(shown[200]).split() == ["variant", "runs", "epoch", "val", "acc", "best", "status"]
    whole = set(DECIMAL.findall(shown[200]))
    for width, text in shown.items():
        check_fits(text, width)
        check_numbers(text, whole)
        assert "0.8123" in text and "runs 1/9" in text
        assert all(word in text.split() for label in labels for word in label.split())
    assert "epoch" in headers(shown[80]) and "11/90" in shown[80]


# --- evaluate, summary, data ------------------------------------------------------------------------------

@pytest.mark.parametrize("diagonal", [950, 1150], ids=["3-digit", "4-digit"])
def test_evaluation_tables_fit_every_width(diagonal):
    result = evaluation_result(diagonal)
    shown = {w: render(lambda c: report.evaluation(result, c), w) for w in WIDTHS}
    whole = set(DECIMAL.findall(shown[200]))
    for width, text in shown.items():
        check_fits(text, width)
        check_numbers(text, whole)
        assert all(name in text for name in CLASSES) and "0.8543" in text
        if "Confusion matrix" not in text:   # ten numbers a row are never cut: a note says so instead
            assert "a wider terminal or --json shows it" in " ".join(text.split())
            continue
        lines = text.splitlines()
        for i, row in enumerate(result.confusion_matrix):   # each row whole, on one line
            assert any(ln.split()[:1] == [str(i)] and ln.split()[-10:] == [str(v) for v in row]
                       for ln in lines), f"row {i} at {width}:\n{text}"
    assert "0 T-shirt/top" in shown[80] and "Confusion matrix" in shown[80]
    assert ("Confusion matrix" in shown[50]) == (diagonal < 1000)


def test_model_summary_and_data_tables_fit_every_width():
    info = {"title": "Run 20260101-120000-a-rather-long-run-name-for-the-book-1234",
            "layers": [{"name": "dense_with_a_long_name", "type": "Dense", "activation": "relu",
                        "output_shape": [None, 300], "params": 235500},
                       {"name": "dense_1", "type": "Dense", "activation": "softmax", "output_shape": [None, 10],
                        "params": 3010}],
            "total_params": 238510, "trainable_params": 238510, "non_trainable_params": 0}
    data = {"directory": "/home/someone/.cache/fmnist", "source": "FMNIST_DATA_DIR", "val_size": 0.2,
            "split_seed": 42, "classes": CLASSES,
            "splits": {"train": [4800] * 10, "val": [1200] * 10, "test": [1000] * 10}}
    for width in WIDTHS:
        text = render(lambda c: report.model_summary(info, c), width)
        check_fits(text, width)
        assert "235,500" in text and "(None, 300)" in text
        text = render(lambda c: report.data_info(data, c), width)
        check_fits(text, width)
        assert "48,000" in text and "Ankle boot" in text


# --- prose ---------------------------------------------------------------------------------------------

def test_saved_to_path_is_never_broken_on_a_terminal():
    path = "/home/someone/projects/fmnist/runs/20260101-120000-rmsprop-sigmoid-a00f/model.keras"
    result = RunResult(run_id="20260101-120000-rmsprop-sigmoid-a00f", run_dir=path.rsplit("/", 1)[0],
                       model_path=path, config={}, history={}, status=Status.COMPLETED, seconds=12.34,
                       best_epoch=3, best_val_accuracy=0.8765)
    for width in (80, 100, 120):
        text = render(lambda c: report.train_result(result, c), width)
        assert path in text.splitlines(), text   # on a line of its own when the sentence would not fit
        assert all(cell_len(ln.rstrip()) <= width for ln in text.splitlines() if ln != path), text
    text = render(lambda c: report.train_result(result, c), 200)
    assert f"saved to {path}" in text
    piped = Console(width=80, file=io.StringIO(), force_terminal=False)
    report.train_result(result, piped)
    assert f"completed in 12.3s, saved to {path}" in piped.file.getvalue()   # logs keep one line


def test_an_epoch_line_of_runs_trained_together_says_so():
    """Their epoch's seconds are the group's together; s/epoch in the table is each run's share."""
    event = EpochEnd(epoch=2, loss=0.5, accuracy=0.8, val_loss=0.55, val_accuracy=0.79, seconds=0.75)
    assert report.plain_epoch_line(event, 5).endswith("  0.75s")
    grouped = EpochEnd(epoch=2, loss=0.5, accuracy=0.8, val_loss=0.55, val_accuracy=0.79, seconds=0.75, group_size=4)
    assert report.plain_epoch_line(grouped, 5).endswith("  0.75s for 4 runs together (0.19s each)")


def test_the_star_says_when_the_runner_up_is_within_the_spread_or_the_best_epoch_is_the_last():
    from types import SimpleNamespace as NS

    from fmnist_cli.report import _best_caveats

    def variant(label, mean, std, epoch, epoch_std=0.0):
        return NS(label=label, aggregate={"best_val_accuracy": {"mean": mean, "std": std, "n": 3},
                                          "best_epoch": {"mean": epoch, "std": epoch_std, "n": 3}})

    close = NS(best_variant="a", base={"epochs": 6},
               variants=[variant("a", 0.8130, 0.001, 6), variant("b", 0.8111, 0.003, 4, 1.0)])
    notes = _best_caveats(close)
    assert notes[0].startswith("b (0.8111±0.003) is within one standard deviation of it (0.8130±0.001)")
    assert notes[1] == "a's best epoch is its last (6): more epochs (--epochs) may improve it."
    clear = NS(best_variant="a", base={"epochs": 6},
               variants=[variant("a", 0.85, 0.002, 4.5, 0.5), variant("b", 0.80, 0.003, 6)])
    assert _best_caveats(clear) == []
    one_seed = NS(best_variant="a", base={"epochs": 6},
                  variants=[variant("a", 0.85, None, 3), variant("b", 0.849, None, 3)])
    assert _best_caveats(one_seed) == []   # no spread to judge by


def test_curves_stop_where_a_seed_stopped_early():
    # Past that epoch the mean is over the seeds still going, and would jump (a sparkline's last
    # characters, the plot's solid line); the plot goes on dashed, the CSV and JSON keep every epoch with n.
    from fmnist_cli.records import whole_epochs

    assert whole_epochs({"mean": [0.6, 0.7, 0.72, 0.81, 0.8], "n": [3, 3, 3, 1, 1]}) == 3
    assert whole_epochs({"mean": [0.6, 0.7], "n": [2, 2]}) == 2
    assert whole_epochs({"mean": [], "n": []}) == 0


def test_runs_table_names_each_runs_comparison(runs_dir, fake_engine):
    assert invoke("train", "--epochs", "2", "--json").exit_code == 0
    assert invoke("runs").stdout.count("comparison") == 0   # no run in one: no column
    assert invoke("compare", "sgd", "adam", "--epochs", "2", "--name", "demo", "--json").exit_code == 0
    records = RunStore(runs_dir).list_runs()
    cid = RunStore(runs_dir).load_comparison("latest").id
    short = report.short_comparison(cid)
    assert short.startswith("demo-") and cid.endswith(short)
    text = render(lambda c: report.runs_table(records, c), 200)
    assert "comparison" in headers(text)
    lines = text.splitlines()[2:]
    assert sum(short in line for line in lines) == 2 and len(lines) == 3
    # what the column shows is a ref the other commands take
    assert invoke("compare", "--show", short).exit_code == 0
    assert report.short_comparison(None) == "-" and report.short_comparison("odd") == "odd"
