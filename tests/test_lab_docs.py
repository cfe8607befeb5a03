"""docs/lab.md: its training snippets run as printed (for one epoch), and its own #links resolve."""

from __future__ import annotations

import re

from test_notebooks import GUIDE, github_anchors

SECTION = "### Train it on signlab's drawn signs"
SHORTER = {"epochs=10": "epochs=1", "range(5)": "range(1)"}  # the guide's runs, cut to one epoch for the suite


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n### ", start + len(heading))
    return text[start:end if end >= 0 else None]


def test_the_guides_training_snippets_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", section(GUIDE.read_text(encoding="utf-8"), SECTION), re.S)
    assert len(blocks) == 2  # train_perceptron, then the same training by hand
    for code in blocks:
        assert any(long in code for long in SHORTER), "the snippet's epochs changed: update SHORTER"
        for long, short in SHORTER.items():
            code = code.replace(long, short)
        exec(compile(code, f"{GUIDE.name} snippet", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"^held-out accuracy 0\.\d+$", out, re.M)
    assert re.search(r"^lecture setup: train 0\.\d+ val 0\.\d+ held-out 0\.\d+$", out, re.M)
    assert re.search(r"^epoch 1  mean loss \d+\.\d+  train acc 0\.\d+  held-out acc 0\.\d+$", out, re.M)


def test_the_guides_own_links_resolve():
    text = GUIDE.read_text(encoding="utf-8")
    links = re.findall(r"\]\(#([^)\s]+)\)", text)
    assert links
    broken = [a for a in links if a not in github_anchors(text)]
    assert not broken, f"docs/lab.md links to headings it does not have: {broken}"


def test_the_guide_names_no_removed_sample_constant():
    # signlab.data.SAMPLE_HELDOUT went with the bundled GTSRB sample
    assert "SAMPLE_HELDOUT" not in GUIDE.read_text(encoding="utf-8")
