"""docs/examples.py, which reruns the README's examples (`make docs`): its parsing and rewriting."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("examples", ROOT / "docs" / "examples.py")
examples = importlib.util.module_from_spec(spec)
spec.loader.exec_module(examples)


def test_every_marked_readme_block_runs_fmnist():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    found = list(examples.blocks(lines))
    assert len(found) >= 5
    for _, start, end in found:
        assert lines[start].startswith("```") and lines[end].startswith("```")
        assert any(ln.startswith("$ fmnist ") for ln in lines[start + 1:end]), lines[start + 1]


def test_a_block_is_rewritten_with_fresh_output_and_cut_as_marked():
    class Stub:
        def run(self, command):
            return [f"out of {command} {i}" for i in range(6)]

    lines = ["text", "<!-- make docs: head=1 tail=1 -->", "```text", "$ fmnist a", "old", "$ other --x",
             "$ fmnist b", "old", "```", "after", "```text", "$ fmnist untouched", "```"]
    new = examples.regenerate(lines, Stub())
    assert new == ["text", "<!-- make docs: head=1 tail=1 -->", "```text",
                   "$ fmnist a", "out of fmnist a 0", "...", "out of fmnist a 5",
                   "$ other --x",
                   "$ fmnist b", "out of fmnist b 0", "...", "out of fmnist b 5",
                   "```", "after", "```text", "$ fmnist untouched", "```"]


def test_short_outputs_are_not_cut():
    assert examples.cut(["a", "b", "c"], 1, 1) == ["a", "b", "c"]
    assert examples.cut(["a", "b", "c", "d"], 1, 1) == ["a", "...", "d"]
    assert examples.cut(["a", "b", "c", "d"], 0, 2) == ["...", "c", "d"]
    assert examples.cut(["a"] * 9, None, None) == ["a"] * 9
