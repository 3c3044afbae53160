"""`fmnist report --html` and `fmnist evaluate --plot`: what the report holds (read back with the
standard library's HTML parser), how REF tells a comparison from a run, the errors, the evaluation
details stored in run.json, and the report rendered by a real browser (headless Chromium)."""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import TINY, assert_clean_error, copy_run, fmnist, invoke, read_json

from fmnist_cli.config import RunConfig
from fmnist_cli.records import Evaluation, RunRecord
from fmnist_cli.store import RunStore

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


class Page(html.parser.HTMLParser):
    """The parts of a report the tests look at: its text, its tags, and every reference out of it."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: dict[str, int] = {}
        self.words: list[str] = []
        self.links: list[str] = []
        self.sections: list[str] = []
        self.feed(text)
        self.text = " ".join(self.words)

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        attrs = dict(attrs)
        self.links += [attrs[k] for k in ("src", "href", "xlink:href", "action") if attrs.get(k)]
        if tag == "section":
            self.sections.append(attrs.get("id"))

    def handle_data(self, data):
        if data.strip():
            self.words.append(data.strip())


def evaluation(diagonal: int, n: int = 100) -> dict:
    """An evaluation result as `fmnist evaluate` stores it: `diagonal` of `n` right per class."""
    off = (n - diagonal) // 9
    matrix = [[diagonal if i == j else off for j in range(10)] for i in range(10)]
    for i, row in enumerate(matrix):
        row[i] += n - sum(row)
    return {"loss": 0.5, "accuracy": diagonal / n, "evaluated": "2026-01-01T00:00:00", "n": 10 * n,
            "per_class": [{"class": c, "accuracy": matrix[i][i] / n, "n": n} for i, c in enumerate(CLASSES)],
            "confusion_matrix": matrix, "classes": CLASSES}


def report(*args) -> tuple[object, Page | None]:
    result = invoke("report", *args)
    path = next((Path(a) for a in args if str(a).endswith(".html")), None)
    page = Page(path.read_text()) if result.exit_code == 0 and path else None
    return result, page


@pytest.fixture
def comparison(runs_dir, fake_engine):
    """sgd and adam, two seeds each; three of the four runs evaluated on the test split."""
    result = invoke("compare", "sgd", "adam", "--epochs", "3", "--repeats", "2", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    store = RunStore(runs_dir)
    for v, diagonal in zip(summary["variants"], (60, 80)):
        for slot in v["runs"][: 2 if v["label"] == "adam" else 1]:
            store.record_evaluation(store.root / slot["run_id"], "test", evaluation(diagonal + slot["repeat"]))
    return summary


# --- what the report holds ---------------------------------------------------------------------------

def test_a_comparison_report_holds_the_table_curves_runs_evaluation_and_configuration(comparison, tmp_path):
    out = tmp_path / "report.html"
    result, page = report("latest", "--html", out)
    assert result.exit_code == 0, result.output
    assert f"Report of comparison {comparison['comparison_id']} written to {out}" in result.stdout
    assert page.sections == ["comparison", "curves", "runs", "evaluation", "configuration", "environment"]
    text = page.text
    # the table: mean ± std per variant (as compare --json has it), seeds, the best variant starred
    adam = next(v for v in comparison["variants"] if v["label"] == "adam")
    best = adam["aggregate"]["best_val_accuracy"]
    assert comparison["best_variant"] == "adam" and "★ adam" in text
    assert f"{best['mean']:.4f} ± {best['std']:.4f}" in text
    assert "test acc" in text and "0.8050 ± 0.0071" in text   # adam's two evaluated seeds: 0.80, 0.81
    # every run, by id, and each variant's confusion matrix heatmap, summed over its evaluated runs
    for v in comparison["variants"]:
        for slot in v["runs"]:
            assert slot["run_id"] in text
    assert "summed over 2 runs (seeds 42, 43)" in text and "sgd, test split: seed 42" in text
    assert "Ankle boot" in text and "all classes" in text
    # figures: the learning curves and two heatmaps, inline, with their text as text
    assert page.tags["svg"] == 3 and "validation accuracy" in text
    assert "Command: fmnist " in text and "optimizer" in text and "varied, below" in text
    assert "Where the runs were trained" in text and "This report" in text
    # self-contained: no script, no stylesheet or image fetched, no reference out of the file
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    assert all(link.startswith(("#", "data:image/png;base64,")) for link in page.links), page.links


def test_a_run_report_holds_its_curves_epochs_evaluation_and_configuration(comparison, runs_dir, tmp_path):
    slot = comparison["variants"][1]["runs"][0]
    out = tmp_path / "run.html"
    result, page = report(slot["run_id"], "--html", out)
    assert result.exit_code == 0, result.output
    assert f"Report of run {slot['run_id']}" in result.stdout
    assert page.sections == ["summary", "curves", "evaluation", "configuration", "environment"]
    history = read_json(runs_dir / slot["run_id"] / "history.json")
    for e, value in enumerate(history["val_accuracy"]):
        assert f"{value:.4f}" in page.text, e
    assert page.tags["svg"] == 2   # the curves and the test split's heatmap
    assert "0.8000" in page.text and "Ankle boot" in page.text and "adam (Keras Adam: lr 0.001)" in page.text
    assert f"part of comparison {comparison['comparison_id']}" in page.text


def test_a_diverged_and_an_incomplete_variant_are_reported_as_such(runs_dir, fake_engine, tmp_path):
    assert invoke("compare", "sgd", "sgd:lr=100", "adam", "--epochs", "3", "--repeats", "2").exit_code == 0
    store = RunStore(runs_dir)
    record = store.load_comparison("latest")
    store.remove_run(store.root / record.variants[2].runs[1])
    result, page = report("latest", "--html", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    assert "diverged" in page.text and "fake divergence" in page.text
    assert "Incomplete: adam (1 of 2 finished)" in page.text and f"fmnist compare --resume {record.id}" in page.text
    # nothing evaluated: the section says how to get the per-class figures
    assert f"fmnist evaluate --comparison {record.id} --split test" in page.text


def test_an_evaluation_stored_before_its_details_were_kept_still_reports(comparison, runs_dir, tmp_path):
    store = RunStore(runs_dir)
    run_id = comparison["variants"][0]["runs"][1]["run_id"]
    store.record_evaluation(store.root / run_id, "val", {"loss": 0.6, "accuracy": 0.7, "n": 12000})
    result, page = report(run_id, "--html", tmp_path / "old.html")
    assert result.exit_code == 0, result.output
    assert "0.7000" in page.text and f"fmnist evaluate {run_id} --split val" in page.text
    assert page.tags["svg"] == 1   # the curves; no heatmap without a matrix
    result, page = report(comparison["comparison_id"], "--html", tmp_path / "cmp.html")
    assert result.exit_code == 0 and "were evaluated before per-class figures were stored" in page.text


def test_the_evaluation_details_round_trip_and_old_records_read(tmp_path):
    record = RunRecord(id="r", evaluations={"test": Evaluation(**evaluation(70))})
    again = RunRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert again.broken is None and again.evaluations["test"].confusion_matrix == evaluation(70)["confusion_matrix"]
    old = RunRecord.from_json({"id": "r", "status": "completed", "evaluations": {"test": {"loss": 1.0, "accuracy": 0.5}}})
    assert old.broken is None and old.evaluations["test"].per_class is None
    bad = RunRecord.from_json({"id": "r", "status": "completed",
                               "evaluations": {"test": {"confusion_matrix": [[1, 2], [3]]}}})
    assert "not square" in bad.broken
    bad = RunRecord.from_json({"id": "r", "status": "completed",
                               "evaluations": {"test": {"per_class": [{"class": "Bag", "accuracy": "high"}]}}})
    assert "per_class[0] should hold" in bad.broken


# --- which REF is which ---------------------------------------------------------------------------------

def test_latest_is_the_newest_run_or_the_comparison_it_belongs_to(comparison, runs_dir, tmp_path):
    store = RunStore(runs_dir)
    assert store.resolve_any("latest") == ("comparison", comparison["comparison_id"])
    assert invoke("train", "--epochs", "2", "--name", "alone").exit_code == 0
    # newer by the clock too: ids made within one second sort by name
    store.update_run(next(runs_dir.glob("*-alone-*")), created="2099-01-01T00:00:00+00:00")
    kind, run_dir = store.resolve_any("latest")
    assert kind == "run" and "alone" in run_dir.name
    assert store.resolve_any(None) == (kind, run_dir)


def test_ids_paths_and_parts_resolve_among_runs_and_comparisons(comparison, runs_dir):
    store = RunStore(runs_dir)
    cid = comparison["comparison_id"]
    run_id = comparison["variants"][0]["runs"][0]["run_id"]
    assert store.resolve_any(cid) == ("comparison", cid)
    assert store.resolve_any(cid[-4:]) == ("comparison", cid)
    assert store.resolve_any(run_id) == ("run", runs_dir / run_id)
    assert store.resolve_any(str(runs_dir / run_id)) == ("run", runs_dir / run_id)
    assert store.resolve_any(run_id.split("-", 2)[-1]) == ("run", runs_dir / run_id)   # name and suffix


def test_a_comparison_named_like_its_runs_default_name_is_found_by_it(runs_dir, fake_engine):
    """`compare adam --name adam-relu`: its run's id says adam-relu too, by default; only a run given
    that --name makes the name ambiguous."""
    out = json.loads(invoke("compare", "adam", "sgd", "--epochs", "2", "--name", "adam-relu", "--json").stdout)
    store = RunStore(runs_dir)
    assert store.resolve_any("adam-relu") == ("comparison", out["comparison_id"])
    assert invoke("train", "--epochs", "2", "--name", "adam-relu", "--json").exit_code == 0
    assert_clean_error(invoke("report", "adam-relu", "--html", runs_dir / "r.html"), 2, "matches")


@pytest.mark.parametrize("ref, words", [
    ("nosuch", "No run or comparison 'nosuch'; see `fmnist runs` and `fmnist compare --list`"),
    ("2026", "matches 5 runs and comparisons (20"),
    ("./nosuch/folder", "No run folder ./nosuch/folder"),
    (" ", "The id is empty"),
])
def test_a_ref_that_names_nothing_or_several_is_one_sentence(ref, words, comparison, tmp_path):
    assert_clean_error(invoke("report", ref, "--html", tmp_path / "r.html"), 2, words)
    assert not (tmp_path / "r.html").exists()


def test_nothing_to_report_in_an_empty_runs_folder(tmp_path):
    assert_clean_error(invoke("report", "--html", tmp_path / "r.html"), 2, "no finished runs or comparisons")


# --- bad input -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    ([], "Give the file to write: fmnist report REF --html FILE.html"),
    (["--html", "{tmp}/r.htm"], "--html {tmp}/r.htm should end in .html"),
    (["--html", "{tmp}"], "is a folder"),
    (["--html", "{tmp}/missing/r.html"], "does not exist"),
    (["--html", "/proc/r.html"], "Cannot write /proc/r.html"),
])
def test_the_output_path_is_checked_before_anything_is_read(args, words, tmp_path, comparison, monkeypatch):
    from fmnist_cli import html_report

    monkeypatch.setattr(html_report, "comparison_page", lambda *a: pytest.fail("the report was built"))
    args = [a.format(tmp=tmp_path) for a in args]
    assert_clean_error(invoke("report", "latest", *args), 2, words.format(tmp=tmp_path))


def test_a_write_that_fails_says_which_file_exit_1(tmp_path, comparison, monkeypatch):
    import errno

    from fmnist_cli import store

    def full(path, text, **kw):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as err:
            raise store.storage_error(err, path) from None

    monkeypatch.setattr(store, "atomic_write_text", full)
    message = assert_clean_error(invoke("report", "--html", tmp_path / "r.html"), 1,
                                 f"Cannot write {tmp_path / 'r.html'}: the disk is full", "--html another path")
    assert "--runs-dir" not in message


def test_a_run_without_a_finished_epoch_or_damaged_is_one_sentence(runs_dir, fake_engine, tmp_path):
    fake_engine.stop_after = 0
    assert invoke("train", "--epochs", "2", "--name", "empty").exit_code == 130
    assert not list(runs_dir.glob("*empty*"))   # a train stopped in its first epoch keeps nothing
    store = RunStore(runs_dir)   # one that crashed in its first epoch, say
    empty = store.create_run(RunConfig(name="empty").validate()).name
    store.update_run(store.root / empty, status="interrupted")
    message = assert_clean_error(invoke("report", empty, "--html", tmp_path / "r.html"), 2,
                                 "has no finished epoch (status: interrupted)")
    assert "yet" not in message   # it will never have one (a diverged run neither); a running one: "yet"
    fake_engine.stop_after = None
    assert invoke("train", "--epochs", "2", "--name", "damaged").exit_code == 0
    run_dir = next(runs_dir.glob("*damaged*"))
    (run_dir / "history.json").write_text("{")
    assert_clean_error(invoke("report", "damaged", "--html", tmp_path / "r.html"), 2,
                       "is broken (history.json is not valid JSON)", f"fmnist runs rm {run_dir.name}")


def test_a_comparison_without_a_finished_run_is_one_sentence(runs_dir, fake_engine, tmp_path):
    fake_engine.stop_after = 0
    assert invoke("compare", "sgd", "adam", "--epochs", "2").exit_code == 1   # no usable variant
    cid = RunStore(runs_dir).comparison_ids()[0]
    assert_clean_error(invoke("report", cid, "--html", tmp_path / "r.html"), 2,
                       f"`fmnist compare --resume {cid}`")


def test_help_has_examples_and_imports_nothing_heavy():
    result = invoke("report", "--help")
    assert result.exit_code == 0 and "Examples" in result.output and "latest" in result.output
    code = ("import sys; from typer.testing import CliRunner; from fmnist_cli.cli import app; "
            "r = CliRunner().invoke(app, ['report', '--help']); assert r.exit_code == 0; "
            "bad = [m for m in ('tensorflow', 'keras', 'jax', 'matplotlib', 'numpy') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- real runs: evaluate --plot and the stored details, on both backends ------------------------------------

def test_evaluate_plot_draws_the_heatmap_and_stores_the_details(trained, runs_dir, tmp_path):
    run_dir = copy_run(trained, runs_dir)
    plot = tmp_path / "confusion.png"
    result = invoke("evaluate", run_dir.name, "--split", "test", "--plot", plot)
    assert result.exit_code == 0, result.output
    assert f"Confusion matrix written to {plot}" in result.stdout
    assert_not_blank(plot, (760, 640))
    assert oct(plot.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    printed = json.loads(invoke("evaluate", run_dir.name, "--split", "test", "--json").stdout)
    stored = read_json(run_dir / "run.json")["evaluations"]["test"]
    for key in ("per_class", "confusion_matrix", "classes", "accuracy"):
        assert stored[key] == printed[key], key
    result, page = report(run_dir.name, "--html", tmp_path / "run.html")
    assert result.exit_code == 0 and page.tags["svg"] == 2 and f"{printed['accuracy']:.4f}" in page.text


@pytest.mark.parametrize("name", ["adam-relu", "W" * 64])
def test_the_heatmap_title_stays_inside_the_figure_and_clear_of_the_colorbar(tmp_path, name):
    """It was the heatmap's title, centred on the heatmap alone, and ran into the colorbar; now the
    figure's, wrapped and shrunk as a run name (up to 64 characters, capitals the widest) needs."""
    from fmnist_cli import figures

    matrix = [[90 if i == j else i + j for j in range(10)] for i in range(10)]
    title = f"Run 20260101-000000-{name}-3f2a, test split (10000 images): accuracy 0.8812"
    fig = figures.confusion_figure([f"class {i}" for i in range(10)], matrix, title)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (text,) = [t for t in fig.texts if t.get_text().replace("\n", " ") == title]
    box = text.get_window_extent(renderer)
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1
    assert len(fig.axes) == 2   # the heatmap and its colorbar, tick labels included, below the title
    for ax in fig.axes:
        assert not box.overlaps(ax.get_tightbbox(renderer)), ax
    figures.save_png(fig, tmp_path / "confusion.png")
    assert_not_blank(tmp_path / "confusion.png", (760, 640))


def test_evaluate_plot_path_is_checked_before_the_model_loads(tmp_path, runs_dir, monkeypatch):
    from fmnist_cli import evaluation

    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    assert_clean_error(invoke("evaluate", "--plot", tmp_path / "c.jpg"), 2, "should end in .png")


def test_on_jax_train_evaluate_plot_and_report(tmp_path, runs_dir):
    plot, page_path = tmp_path / "c.png", tmp_path / "r.html"
    proc = fmnist("train", *TINY, "--backend", "jax", "--name", "onjax", "--quiet")
    assert proc.returncode == 0, proc.stderr
    proc = fmnist("evaluate", "onjax", "--split", "test", "--backend", "jax", "--plot", plot, "--json")
    assert proc.returncode == 0, proc.stderr
    assert_not_blank(plot, (760, 640))
    proc = fmnist("report", "--html", page_path, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["kind"] == "run" and "onjax" in out["id"] and out["html"] == str(page_path)
    page = Page(page_path.read_text())
    assert "jax" in page.text and page.tags["svg"] == 2


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def assert_not_blank(png: Path, size: tuple[int, int] | None = None) -> None:
    """A picture with something drawn in it: mostly one colour would mean an empty render."""
    from PIL import Image
    import numpy as np

    image = np.asarray(Image.open(png).convert("L"), dtype=float)
    if size:
        assert image.shape[::-1] == size, image.shape
    assert image.std() > 20, f"{png} looks blank (pixel std {image.std():.1f})"
    assert (image < 128).mean() > 0.01, f"{png} has hardly any dark pixels"


# --- a real browser ----------------------------------------------------------------------------------

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# No network, no first-run work, no GPU: a quiet, reproducible headless render.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def chromium() -> str:
    found = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if not found:
        pytest.skip("no Chromium to render the report in (Debian: apt-get install chromium; `make test` "
                    "installs it where apt-get exists)")
    return found


def browse(html_file: Path, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *flags,
                           html_file.resolve().as_uri()], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)


def test_headless_chromium_renders_the_report(comparison, tmp_path):
    chromium()   # skip before building anything when there is none
    out = tmp_path / "report.html"
    assert invoke("report", "--html", out).exit_code == 0
    shot = tmp_path / "shot.png"
    proc = browse(out, tmp_path, "--window-size=1280,2000", f"--screenshot={shot}")
    assert shot.is_file(), proc.stderr[-2000:]
    assert_not_blank(shot, (1280, 2000))
    dom = browse(out, tmp_path, "--dump-dom").stdout
    assert dom.count("<svg") == 3 and "<script" not in dom
    for v in comparison["variants"]:
        assert f">{v['label']}<" in dom or f"> {v['label']}<" in dom, v["label"]
    assert "★" in dom and "rows are the true class" in dom


def test_a_variant_diverged_in_its_first_epoch_is_a_result_not_a_gap(runs_dir, fake_engine, tmp_path):
    """As in the terminal table: a seed that diverged is not missing, so no `--resume` advice."""
    assert invoke("compare", "sgd:lr=5000", "adam", "--epochs", "2").exit_code == 0
    result, page = report("latest", "--html", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    assert "diverged" in page.text and "Incomplete" not in page.text and "--resume" not in page.text
