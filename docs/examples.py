"""Rerun the README's examples and write what the current code prints into it (`make docs`).

A README block is regenerated when the line before its opening fence is the marker

    <!-- make docs -->                     every command's whole output
    <!-- make docs: head=7 tail=2 -->      longer outputs cut to their first 7 and last 2 lines

Each `$ fmnist ...` line of the block runs, in order, in one scratch folder shared by the whole
README (so `fmnist evaluate` finds the run a `fmnist train` block made), with a scratch home and
cache, no terminal and 118 columns; its output replaces the lines that followed it. Other `$ ...`
lines (`tensorboard --logdir tb`, say) are kept as they are, not run. Files the commands write under
docs/ (a plot) are copied into the repository's docs/. Paths under the scratch home are shown with `~`.

    python docs/examples.py             # rewrite README.md
    python docs/examples.py --check     # exit 1 if a marked block's commands changed shape (no run)
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- make docs(?::\s*(?P<opts>[^>]*?))?\s*-->\s*$")
WIDTH = 118


def blocks(lines: list[str]):
    """(marker options, index of the opening fence, index of the closing fence) of each marked block."""
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if m and i + 1 < len(lines) and lines[i + 1].startswith("```"):
            end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
            opts = dict(kv.split("=", 1) for kv in (m.group("opts") or "").split())
            yield {k: int(v) for k, v in opts.items()}, i + 1, end
            i = end
        i += 1


def cut(output: list[str], head: int | None, tail: int | None) -> list[str]:
    if head is None and tail is None:
        return output
    head, tail = head or 0, tail or 0
    if len(output) <= head + tail + 1:
        return output
    return output[:head] + ["..."] + (output[-tail:] if tail else [])


class Scratch:
    def __init__(self, base: Path):
        self.home = base / "home"
        self.work = self.home / "tour"
        (self.work / "docs").mkdir(parents=True)   # where the README's figures are written
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("FMNIST_", "KERAS_", "XDG_"))}
        self.env.update(HOME=str(self.home), COLUMNS=str(WIDTH), LINES="50", NO_COLOR="1", TERM="dumb",
                        PYTHONWARNINGS="ignore", TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
        for var in ("FMNIST_DATA_DIR",):   # where the data is stays the caller's business
            if os.environ.get(var):
                self.env[var] = os.environ[var]

    def run(self, command: str) -> list[str]:
        argv = shlex.split(command)
        argv = [sys.executable, "-m", "fmnist_cli", *argv[1:]]
        t0 = time.perf_counter()
        # both streams into one pipe, unbuffered: in the order a reader sees them in a terminal
        proc = subprocess.run(argv, cwd=self.work, env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT,
                              text=True, timeout=3600)
        print(f"  {time.perf_counter() - t0:6.1f} s  exit {proc.returncode}  $ {command}", file=sys.stderr)
        text = proc.stdout
        text = text.replace(str(self.work) + os.sep, "").replace(str(self.work), ".")
        text = text.replace(str(self.home), "~")
        return [line.rstrip() for line in text.rstrip("\n").splitlines()]

    def harvest(self) -> list[Path]:
        """Copy what the commands wrote under docs/ into the repository's docs/."""
        copied = []
        source = self.work / "docs"
        if source.is_dir():
            for path in sorted(source.rglob("*")):
                if path.is_file():
                    target = ROOT / "docs" / path.relative_to(source)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)
                    copied.append(target)
        return copied


def regenerate(lines: list[str], scratch: Scratch) -> list[str]:
    out, last = [], 0
    for opts, start, end in blocks(lines):
        out.extend(lines[last:start + 1])
        for line in lines[start + 1:end]:
            if not line.startswith("$ "):
                continue   # old output: replaced
            out.append(line)
            if line.startswith("$ fmnist"):
                out.extend(cut(scratch.run(line[2:]), opts.get("head"), opts.get("tail")))
        last = end
    out.extend(lines[last:])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Rerun the README's examples and write their output into it.")
    p.add_argument("--check", action="store_true", help="list the marked blocks and their commands; run nothing")
    args = p.parse_args(argv)
    lines = README.read_text(encoding="utf-8").splitlines()
    found = list(blocks(lines))
    if args.check:
        for opts, start, end in found:
            commands = [ln for ln in lines[start + 1:end] if ln.startswith("$ ")]
            print(f"README.md:{start + 1}: {len(commands)} command(s) {opts or ''}")
            for c in commands:
                print("   ", c)
        return 0 if found else 1
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    print(f"Rerunning {len(found)} README example block(s)...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="fmnist-docs-") as tmp:
        scratch = Scratch(Path(tmp))
        new = regenerate(lines, scratch)
        copied = scratch.harvest()
    README.write_text("\n".join(new) + "\n", encoding="utf-8")
    for path in copied:
        print(f"Updated {path.relative_to(ROOT)}", file=sys.stderr)
    print("README.md rewritten.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
