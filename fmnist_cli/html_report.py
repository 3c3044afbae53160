"""`fmnist report`: one self-contained HTML file for a comparison or a run, to open in any browser or
send to a colleague. Inline CSS, figures as inline SVG, no script and nothing fetched from the
network. Built from what the core already returns (compare.summarize, the runs' records and
histories); matplotlib draws the figures, the standard library writes the HTML."""

from __future__ import annotations

import datetime as dt
import html
import math
import platform
import re
import shlex
from pathlib import Path

from .errors import BrokenRecord, RunNotFound
from .records import METRICS, RunInfo, Status
from .store import RunStore

SPLIT_NAMES = {"test": "test split", "val": "validation split"}
STATUS_CLASS = {Status.COMPLETED: "ok", Status.DIVERGED: "bad", Status.FAILED: "bad", Status.CRASHED: "bad",
                Status.BROKEN: "bad", Status.INTERRUPTED: "warn", Status.INCOMPLETE: "warn",
                Status.MISSING: "warn", Status.RUNNING: "info"}

CSS = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d2330; background: #fff; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.55em; margin: 0 0 4px; }
h2 { font-size: 1.2em; border-bottom: 1px solid #d8dde6; padding-bottom: 4px; margin: 2em 0 .6em; }
h3 { font-size: 1.02em; margin: 1.4em 0 .3em; }
p { margin: .4em 0; }
.meta, figcaption, .note, footer { color: #566070; }
.note { font-size: .92em; }
nav { margin: 10px 0 0; font-size: .95em; }
nav a { margin-right: 14px; color: #2458a6; text-decoration: none; }
code { font: .9em ui-monospace, "DejaVu Sans Mono", monospace; background: #f3f5f8; padding: 1px 4px;
       border-radius: 3px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 9px; text-align: right; border-bottom: 1px solid #e5e8ee; white-space: nowrap; }
th { background: #f3f5f8; font-weight: 600; white-space: normal; vertical-align: bottom; }
.sd { color: #566070; font-size: .86em; }
.stack .sd { display: block; line-height: 1.15; }
th.l, td.l { text-align: left; }
td.wrap { white-space: normal; min-width: 16em; text-align: left; }
tr.best td { background: #edf6ee; font-weight: 600; }
tr.group td { border-top: 2px solid #d8dde6; }
.ok { color: #1a7f37; } .bad { color: #c62828; } .warn { color: #a86400; } .info { color: #2458a6; }
.star { color: #c98a00; }
.n { color: #566070; font-size: .85em; }
.bar { display: inline-block; height: .65em; background: #4c78a8; vertical-align: middle; margin-left: 8px;
       border-radius: 1px; }
figure { margin: 10px 0 18px; }
figure svg { width: 100%; height: auto; display: block; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 10px 24px;
        align-items: start; }
footer { margin-top: 3em; border-top: 1px solid #d8dde6; padding-top: 8px; font-size: .88em; }
@media print { nav { display: none; } h2 { break-after: avoid; } figure, table { break-inside: avoid; } }
"""


# --- small pieces of HTML ------------------------------------------------------------------------

def esc(value) -> str:
    return html.escape(str(value), quote=True)


def num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-" if value is None else esc(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else esc(value)


def _to_the_second(iso: str) -> str:
    """An ISO time as a person reads it: a run's `created` has microseconds, for ordering only."""
    return re.sub(r"(T\d\d:\d\d:\d\d)\.\d+", r"\1", iso)


def pm(stat: dict | None, digits: int = 4) -> str:
    """mean ± std (std only where several seeds have the figure), the std set smaller."""
    if not stat or stat.get("mean") is None:
        return "-"
    text = f"{stat['mean']:.{digits}f}"
    if stat.get("std") is not None:
        text += f'<span class="sd"> ± {stat["std"]:.{digits}f}</span>'
    return text


def epoch_pm(stat: dict | None) -> str:
    """A mean best epoch: `5` when the seeds agree, else `4.67 ± 0.58` (`3.00 ± 2.00`, not `3 ± 2.00`)."""
    if not stat or stat.get("mean") is None:
        return "-"
    if not stat.get("std"):
        return f"{stat['mean']:.3g}"
    return f'{stat["mean"]:.2f}<span class="sd"> ± {stat["std"]:.2f}</span>'


def status_html(status) -> str:
    status = Status(status) if status in Status._value2member_map_ else status
    return f'<span class="{STATUS_CLASS.get(status, "")}">{esc(status)}</span>'


def table(headers: list[str], rows: list[list[str]], *, left: int = 1, row_classes: list[str] | None = None,
          css: str = "") -> str:
    """Cells are HTML already (escaped by the caller); the first `left` columns are left-aligned."""
    def cell(tag, i, content):
        return f'<{tag}{" class=l" if i < left else ""}>{content}</{tag}>'

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cls = (row_classes or [""] * len(rows))[r]
        body.append(f'<tr{f" class={cls!r}" if cls else ""}>' + "".join(
            c if c.startswith("<td") else cell("td", i, c) for i, c in enumerate(row)) + "</tr>")
    attr = f' class="{css}"' if css else ""
    return f'<div class="scroll"><table{attr}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def key_values(pairs: list[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th class=l>{esc(k)}</th><td class=l>{v}</td></tr>" for k, v in pairs)
    return f'<div class="scroll"><table><tbody>{rows}</tbody></table></div>'


def figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, meta: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document; `sections` are (anchor, title, body), linked from a contents line."""
    from . import __version__

    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(section(a, t, b) for a, t, b in sections)
    made = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="fmnist {esc(__version__)}">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
            f"<body><main><header><h1>{esc(title)}</h1><p class=meta>{meta}</p><nav>{nav}</nav></header>\n"
            f"{body}\n<footer>Made by fmnist {esc(__version__)} on {esc(made)}. One self-contained file: "
            f"no scripts, nothing fetched from the network.</footer></main></body></html>\n")


# --- figures ---------------------------------------------------------------------------------------

def confusion_svg(classes: list[str], matrix: list[list[int]], title: str) -> str:
    from . import figures

    return figures.svg(figures.confusion_figure(classes, matrix, title))


def per_class_table(evaluations: list) -> str:
    """Accuracy per class, mean ± std over the evaluations given (one per run), with a bar."""
    from .compare import stat

    classes = [row["class"] for row in evaluations[0].per_class]
    rows = []
    for i, name in enumerate(classes):
        s = stat([e.per_class[i]["accuracy"] for e in evaluations if i < len(e.per_class)])
        width = max(0.0, min(1.0, s["mean"] or 0.0)) * 120
        rows.append([str(i), esc(name), pm(s), f'<td class=l><span class="bar" style="width:{width:.0f}px"></span></td>',
                     str(sum(e.per_class[i]["n"] for e in evaluations if i < len(e.per_class)))])
    return table(["#", "class", "accuracy", "", "images"], rows, left=2)


def summed_matrix(evaluations: list) -> list[list[int]]:
    size = len(evaluations[0].confusion_matrix)
    return [[sum(e.confusion_matrix[i][j] for e in evaluations) for j in range(size)] for i in range(size)]


def has_details(evaluation) -> bool:
    """Per-class figures and a confusion matrix, stored by evaluations since `fmnist report` exists."""
    return bool(evaluation and evaluation.per_class and evaluation.confusion_matrix and evaluation.classes)


# --- configuration and environment ------------------------------------------------------------------

CONFIG_KEYS = ("hidden", "activation", "dropout", "optimizer", "epochs", "batch_size", "seed", "val_size",
               "split_seed", "limit", "early_stopping", "monitor", "backend", "engine")


def config_rows(config) -> list[tuple[str, str]]:
    data = config.to_dict()
    rows = []
    for key in CONFIG_KEYS:
        value = data.get(key)
        if key == "hidden":
            value = "784-" + "-".join(map(str, value)) + "-10"
        elif key == "optimizer":
            # what it trained with, Keras's defaults filled in: what a methods section cites
            trained = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {str(v).lower()}"
                                for k, v in config.optimizer.trained_with().items() if v is not None)
            value = f"{config.optimizer.label()} (Keras {config.optimizer.keras_class}: {trained})"
        elif key == "engine":
            value = config.resolved_engine
        elif value is None:
            value = "none" if key in ("limit", "early_stopping") else "-"
        rows.append((key, esc(value)))
    return rows


def environment(infos: list[RunInfo]) -> str:
    """What the runs recorded about where they were trained (each value once; several where the runs
    differ), and the machine this report was made on."""
    values: dict[str, list] = {}
    for info in infos:
        record = info.record
        if record is None:
            continue
        for key, value in {**(record.versions or {}), "host": record.host}.items():
            if value is not None and value not in values.setdefault(key, []):
                values[key].append(value)
    order = ["fmnist", "commit", "backend", "keras", "tensorflow", "jax", "jaxlib", "numpy", "python", "device", "host", "system",
             "machine", "cpus"]
    keys = [k for k in order if k in values] + sorted(k for k in values if k not in order)
    out = ['<div class="grid">']
    if keys:
        out.append(f"<div><h3>Where the run{'s were' if len(infos) > 1 else ' was'} trained</h3>")
        out.append(key_values([(k, esc(", ".join(map(str, values[k])))) for k in keys]))
        missing = [k for k in ("fmnist", "cpus") if k not in values]
        if missing:
            out.append(f"<p class=note>Not recorded by these runs (older fmnist): {esc(', '.join(missing))}.</p>")
        out.append("</div>")
    import os

    import matplotlib

    from . import __version__

    out.append("<div><h3>This report</h3>")
    out.append(key_values([("fmnist", esc(__version__)), ("python", esc(platform.python_version())),
                           ("matplotlib", esc(matplotlib.__version__)),
                           ("machine", esc(f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"))]))
    out.append("</div></div>")
    return "".join(out)


# --- a run ------------------------------------------------------------------------------------------

def run_page(store: RunStore, run_dir: Path) -> str:
    info = store.load_run(run_dir)
    if info.status == Status.BROKEN:
        raise BrokenRecord(f"Run {info.id} is broken ({info.reason}), so there is nothing to report; "
                           f"`fmnist runs rm {info.id}` removes it.")
    history = info.history
    if not history or not history["loss"]:
        later = " yet; wait for its first epoch, or pick" if info.status == Status.RUNNING else "; pick"
        raise RunNotFound(f"Run {info.id} has no finished epoch (status: {info.status}), so there is nothing to "
                          f"report{later} another run (`fmnist runs`).")
    from . import figures

    config, record = info.config, info.record
    best = info.get("best_epoch")
    meta = [status_html(info.status), esc(config.short()), f"on {esc(config.backend)}"]
    if record and record.created:
        meta.append(f"started {esc(_to_the_second(record.created))}")
    if info.get("seconds") is not None:
        meta.append(f"{info.get('seconds'):.1f} s")
    if record and record.comparison:
        meta.append(f"part of comparison {esc(record.comparison)}")

    final = {m: history[m][-1] for m in METRICS}
    figures_rows = [("epochs", esc(len(history["loss"])) + (" (stopped early)" if info.get("stopped_early") else "")),
                    ("best epoch", f"{best} (by {esc(config.monitor)})" if best else "-"),
                    ("val accuracy at the best epoch", num(info.get("best_val_accuracy")))]
    figures_rows += [(f"final {m}", num(final[m])) for m in METRICS]
    for split in ("test", "val"):
        evaluation = record.evaluations.get(split) if record else None
        if evaluation is not None:
            figures_rows.append((f"{SPLIT_NAMES[split]} accuracy", num(evaluation.accuracy)))
    if info.get("message"):
        figures_rows.append(("message", esc(info.get("message"))))
    summary = key_values(figures_rows)

    curves = figure(figures.svg(figures.run_curves_figure(history, f"Run {info.id}", best)),
                    "Loss and accuracy per epoch, train and validation; the dotted line is the best epoch.")
    epochs = table(["epoch", *METRICS, "seconds"],
                   [[str(e + 1), *(num(history[m][e]) for m in METRICS),
                     num(history["seconds"][e], 2) if e < len(history.get("seconds", [])) else "-"]
                    for e in range(len(history["loss"]))],
                   row_classes=["best" if e + 1 == best else "" for e in range(len(history["loss"]))])

    sections = [("summary", "Summary", summary), ("curves", "Learning curves", curves + epochs)]
    evaluations = record.evaluations if record else {}
    if evaluations:
        sections.append(("evaluation", "Evaluation", run_evaluations(info.id, evaluations)))
    sections.append(("configuration", "Configuration", key_values(config_rows(config))))
    sections.append(("environment", "Environment", environment([info])))
    return page(f"Run {info.id}", " · ".join(meta), sections)


def run_evaluations(run_id: str, evaluations: dict) -> str:
    out = []
    for split in sorted(evaluations, key=lambda s: (s != "test", s)):
        e = evaluations[split]
        name = SPLIT_NAMES.get(split, split)
        out.append(f"<h3>{esc(name.capitalize())}</h3><p>loss {num(e.loss)}, accuracy <b>{num(e.accuracy)}</b> "
                   f"on {esc(e.n or '?')} images (evaluated {esc(e.evaluated or '?')}).</p>")
        if has_details(e):
            title = f"Run {run_id}, {name}: accuracy {num(e.accuracy)}"
            out.append(f'<div class="grid"><div>{per_class_table([e])}</div>'
                       + figure(confusion_svg(e.classes, e.confusion_matrix, title),
                                "Confusion matrix: rows are the true class, columns the predicted one.")
                       + "</div>")
        else:
            out.append(f"<p class=note>This evaluation was stored before per-class figures were kept: "
                       f"<code>fmnist evaluate {esc(run_id)} --split {esc(split)}</code> stores them.</p>")
    return "".join(out)


# --- a comparison -------------------------------------------------------------------------------------

def comparison_page(store: RunStore, cid: str) -> str:
    from . import compare as cmp
    from . import figures
    from .config import RunConfig, monitor_phrase
    from .report import best_per_line, saved_model_notes

    record = store.load_comparison(cid)
    summary = cmp.summarize(store, record)
    if not any(v.n for v in summary.variants):
        broken = sum(slot.status == Status.BROKEN for v in summary.variants for slot in v.runs)
        if broken:
            raise RunNotFound(f"Comparison {cid} has no usable run, so there is nothing to report: {broken} of its "
                              f"runs are broken (`fmnist runs -c {cid}` says why; `fmnist compare --resume {cid}` "
                              "trains them again).")
        raise RunNotFound(f"Comparison {cid} has no run with a finished epoch yet, so there is nothing to report; "
                          f"finish it with `fmnist compare --resume {cid}`.")
    infos = {slot.run_id: store.load_run(store.root / slot.run_id)
             for v in summary.variants for slot in v.runs if slot.run_id and (store.root / slot.run_id).is_dir()}
    n = summary.repeats
    monitor = summary.monitor
    meta = [status_html(summary.status), f"{len(summary.variants)} variants", f"{n} seed{'s' if n > 1 else ''} each"]
    if summary.created:
        meta.append(f"started {esc(_to_the_second(summary.created))}")
    meta.append(f"best epoch: {esc(monitor_phrase(monitor))}")

    def evaluations(v, split):
        found = []
        for slot in v.runs:
            if slot.status != Status.COMPLETED:   # as the terminal's test acc and `evaluate --comparison`
                continue
            info = infos.get(slot.run_id)
            e = info.record.evaluations.get(split) if info and info.record else None
            if e is not None:
                found.append((slot, e))
        return found

    splits = [s for s in ("test", "val") if any(evaluations(v, s) for v in summary.variants)]

    # The comparison table
    headers = ["variant", "seeds", "loss", "acc", "val loss", "val acc", "best val acc",
               "best epoch"] + ["test acc" for s in splits if s == "test"] + ["s/epoch", "status"]
    rows, classes = [], []
    for v in summary.variants:
        agg = v.aggregate
        star = '<span class="star" title="best variant">★</span> ' if v.label == summary.best_variant else ""
        row = [star + esc(v.label), f"{v.n} of {v.of}",   # as the terminal's table says it
               *(pm(agg["final"][m]) for m in METRICS), pm(agg["best_val_accuracy"]), epoch_pm(agg["best_epoch"])]
        if "test" in splits:
            found = evaluations(v, "test")
            s = cmp.stat([e.accuracy for _, e in found])
            row.append(pm(s) + (f' <span class="n">({s["n"]} of {v.n})</span>' if found and s["n"] != v.n else ""))
        row += [pm(agg["seconds_per_epoch"], 2), status_html(v.status)]
        rows.append(row)
        classes.append("best" if v.label == summary.best_variant else "")
    body = table(headers, rows, row_classes=classes, css="stack")   # std under the mean: 11 columns fit
    over = f"mean ± std over {n} seeds (sample std)" if n > 1 else "one seed per variant"
    body += (f"<p class=note>Final epoch figures, {over}. Best val accuracy is the val accuracy at each run's best "
             f"epoch ({esc(monitor_phrase(monitor))}); seconds per epoch leave the compiling first epoch out"
             + (", and runs copied from earlier runs (--reuse)" if any(r.reused_from for v in summary.variants
                                                                          for r in v.runs) else "") + ".")
    if summary.best_variant:
        body += f' <span class="star">★</span> best: <b>{esc(summary.best_variant)}</b> (highest mean best val accuracy).'
    body += "</p>"
    if summary.best_per:
        body += f"<p class=note>{esc(best_per_line(summary.best_per))}</p>"
    body += "".join("<p class=note>" + re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(line)) + "</p>"
                    for line in saved_model_notes(summary, "test" in splits))
    incomplete = summary.incomplete   # the terminal table's rule: a diverged seed is a result, not a gap
    if incomplete:
        body += (f"<p class=warn>Incomplete: {esc(', '.join(v.gap() for v in incomplete))}. "
                 f"<code>fmnist compare --resume {esc(cid)}</code> fills the gaps.</p>")
    sections = [("comparison", "Comparison", body)]

    curves = figure(figures.svg(figures.comparison_figure(summary)),
                    "Train and validation loss and accuracy per epoch" +
                    (", mean over seeds with a band of ± one standard deviation." if n > 1 else "."))
    sections.append(("curves", "Learning curves", curves))
    sections.append(("runs", "Runs", comparison_runs(summary, infos, splits)))
    if splits:
        sections.append(("evaluation", "Evaluation",
                         "".join(comparison_evaluation(summary, split, evaluations) for split in splits)))
    else:   # where the per-class figures come from
        sections.append(("evaluation", "Evaluation",
                         f"<p class=note>No run is evaluated yet. <code>fmnist evaluate --comparison {esc(cid)} "
                         "--split test</code> scores them all; this report then shows each variant's accuracy "
                         "per class and its confusion matrix.</p>"))

    # What the variants vary, read from their full configs (as trained), not from the labels.
    per_variant = [dict(config_rows(v.run_config)) for v in record.variants]
    base_rows = list(per_variant[0].items()) if per_variant else config_rows(RunConfig.from_dict(record.base))
    varied = [k for k, _ in base_rows if len({rows[k] for rows in per_variant}) > 1]
    conf = ""
    if record.argv:
        conf += f"<p>Command: <code>fmnist {esc(shlex.join(record.argv))}</code></p>"
    conf += "<h3>Settings of every variant</h3>" + key_values(
        [(k, "<i>varied, below</i>" if k in varied else v) for k, v in base_rows])
    if varied:
        conf += "<h3>What the variants vary</h3>" + table(
            ["variant", *map(esc, varied)], [[esc(v.label), *(rows[k] for k in varied)]
                                             for v, rows in zip(record.variants, per_variant)], left=1 + len(varied))
    sections.append(("configuration", "Configuration", conf))
    sections.append(("environment", "Environment", environment(list(infos.values()))))
    return page(f"Comparison {cid}", " · ".join(meta), sections)


def comparison_runs(summary, infos: dict, splits: list[str]) -> str:
    headers = ["variant", "seed", "run", "status", "epochs", "best epoch", "best val acc",
               "final val acc"] + [f"{s} acc" for s in splits] + ["seconds", "message"]
    rows, classes = [], []
    for v in summary.variants:
        for k, slot in enumerate(v.runs):
            info = infos.get(slot.run_id)
            history = slot.history or {}
            evals = info.record.evaluations if info and info.record else {}
            row = [esc(v.label) if k == 0 else "", esc(slot.seed if slot.seed is not None else "-"),
                   esc(slot.run_id or "-"), status_html(slot.status),
                   str(len(history.get("loss", []))) if history else "-", esc(slot.best_epoch or "-"),
                   num(slot.best_val_accuracy), num(history["val_accuracy"][-1]) if history.get("val_accuracy") else "-"]
            row += [num(evals[s].accuracy) if s in evals else "-" for s in splits]
            # a copy's seconds are its source's, measured when that run trained
            message = slot.message or (f"copied from {slot.reused_from} (identical settings); its seconds are "
                                       "that run's" if slot.reused_from else "")
            row += [num(slot.seconds, 1), f'<td class="wrap">{esc(message)}</td>']
            rows.append(row)
            classes.append(" ".join(c for c in ("group" if k == 0 else "",
                                                "best" if v.label == summary.best_variant else "") if c))
    out = table(headers, rows, left=4, row_classes=classes)
    together = max((slot.group_size or 1 for v in summary.variants for slot in v.runs), default=1)
    if together > 1:
        out += (f"<p class=note>Runs trained together in one program (up to {together} here) share its wall "
                "time: their seconds are that program's.</p>")
    return out


def comparison_evaluation(summary, split: str, evaluations) -> str:
    """Per-class accuracy side by side (mean over each variant's evaluated runs), then each variant's
    confusion matrix summed over those runs."""
    from .compare import stat

    name = SPLIT_NAMES[split]
    detailed = [(v, [e for _, e in evaluations(v, split) if has_details(e)]) for v in summary.variants]
    detailed = [(v, es) for v, es in detailed if es]
    out = [f"<h3>{esc(name.capitalize())}</h3>"]
    if detailed:
        classes = detailed[0][1][0].classes
        headers = ["#", "class"] + [esc(v.label) for v, _ in detailed]
        rows = []
        for i, cls in enumerate(classes):
            rows.append([str(i), esc(cls)] + [pm(stat([e.per_class[i]["accuracy"] for e in es])) for _, es in detailed])
        rows.append(["", "<b>all classes</b>"] + [f"<b>{pm(stat([e.accuracy for e in es]))}</b>" for _, es in detailed])
        rows.append(["", "runs evaluated"] + [str(len(es)) for _, es in detailed])
        out.append("<p>Accuracy per class, mean ± std over each variant's runs evaluated on the "
                   f"{esc(name)}:</p>" + table(headers, rows, left=2))
        cells = []
        for v, es in detailed:
            matrix = summed_matrix(es)
            seeds = ", ".join(str(slot.seed) for slot, e in evaluations(v, split) if has_details(e))
            over = f"summed over {len(es)} runs (seeds {seeds})" if len(es) > 1 else f"seed {seeds}"
            title = f"{v.label}, {name}: {over}"
            cells.append(figure(confusion_svg(classes, matrix, title),
                                f"{esc(v.label)}: rows are the true class, columns the predicted one; {esc(over)}."))
        out.append(f'<div class="grid">{"".join(cells)}</div>')
    older = [v.label for v in summary.variants
             if evaluations(v, split) and not all(has_details(e) for _, e in evaluations(v, split))]
    if older:
        out.append(f"<p class=note>Some runs of {esc(', '.join(older))} were evaluated before per-class figures "
                   f"were stored; evaluating them again (<code>fmnist evaluate RUN --split {esc(split)}</code>) "
                   "adds them.</p>")
    return "".join(out)
