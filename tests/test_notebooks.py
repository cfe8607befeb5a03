"""The course notebook: stripped in git, parametrised, linked to the guide, and it runs top to bottom."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "lab.ipynb"
GUIDE = ROOT / "docs" / "lab.md"
STRIP = ROOT / "scripts" / "strip_notebooks.py"
SHOW = re.compile(r'^show\("([a-z0-9-]+)"\)$')  # a cell that is exactly one experiment


def cells(nb: dict, kind: str) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == kind]


def source(cell: dict) -> str:
    return "".join(cell["source"])  # nbformat on disk: a list of lines or one string


@pytest.fixture(scope="module")
def nb() -> dict:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def github_anchors(markdown: str) -> set[str]:
    """The #anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces to hyphens, and
    -1, -2 … after repeats. Headings inside fenced code blocks are not headings."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def test_github_anchors_follow_githubs_rules():
    text = "# A b\n## 4. The full dataset (`--data DIR`)\n```\n# not a heading\n```\n### Init: N(0, 0.1) vs He\n# A b"
    assert github_anchors(text) == {"a-b", "4-the-full-dataset---data-dir", "init-n0-01-vs-he", "a-b-1"}


def test_outputs_and_execution_counts_are_stripped(nb):
    dirty = [i for i, c in enumerate(nb["cells"])
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"cells {dirty} of {NOTEBOOK.name} keep outputs: run python scripts/strip_notebooks.py"


def test_the_strip_script_strips_and_its_check_fails_until_it_has(nb, tmp_path):
    dirty = copy.deepcopy(nb)
    first = cells(dirty, "code")[0]
    first["execution_count"] = 3
    first["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hello\n"]}]
    first["metadata"]["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    path = tmp_path / "dirty.ipynb"
    path.write_text(json.dumps(dirty), encoding="utf-8")

    def strip(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(STRIP), *args, str(path)], capture_output=True, text=True)

    check = strip("--check")
    assert check.returncode == 1 and "dirty.ipynb" in check.stdout
    assert strip().returncode == 0
    assert strip("--check").returncode == 0
    clean = json.loads(path.read_text(encoding="utf-8"))
    assert [source(c) for c in clean["cells"]] == [source(c) for c in nb["cells"]]
    assert "execution" not in cells(clean, "code")[0]["metadata"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in cells(clean, "code"))


def test_the_committed_notebook_is_byte_for_byte_what_the_strip_script_writes(tmp_path):
    # an editor's stray metadata or another JSON layout would give noisy diffs: the script is the norm
    path = tmp_path / NOTEBOOK.name
    path.write_bytes(NOTEBOOK.read_bytes())
    subprocess.run([sys.executable, str(STRIP), str(path)], check=True, capture_output=True)
    assert path.read_bytes() == NOTEBOOK.read_bytes()


def test_a_parameters_cell_comes_first_with_the_smoke_budget(nb):
    first = cells(nb, "code")[0]
    assert "parameters" in first["metadata"].get("tags", [])  # papermill's tag, so -p BUDGET full works
    text = source(first)
    assert re.search(r'^BUDGET = "smoke"', text, re.M)
    assert re.search(r"^DATA = None", text, re.M)
    assert re.search(r"^OUT = ", text, re.M)


def test_every_guide_link_resolves_to_a_heading(nb):
    anchors = github_anchors(GUIDE.read_text(encoding="utf-8"))
    links = [a for c in nb["cells"] for a in re.findall(r"docs/lab\.md#([^)\s]+)", source(c))]
    assert len(links) >= 10
    broken = [a for a in links if a not in anchors]
    assert not broken, f"links to headings docs/lab.md does not have: {broken}"


def test_every_registered_experiment_has_its_cell_in_the_registrys_order(nb):
    pytest.importorskip("torch")
    from signlab.lab.experiments import EXPERIMENTS

    shown = [name for c in cells(nb, "code") for name in re.findall(r'show\("([a-z0-9-]+)"\)', source(c))]
    missing = [name for name in EXPERIMENTS if name not in shown]
    assert not missing, f"no show(NAME) cell for {missing}"
    assert [n for n in shown if n in EXPERIMENTS] == list(EXPERIMENTS)


def kernel_manager(tmp_path: Path):
    """A kernel that runs this interpreter, from a kernelspec in a temporary folder: the test needs no
    globally installed kernel, and the notebook runs on the signlab under test."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = tmp_path / "kernels" / "signlab-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "signlab test", "language": "python"}))
    ksm = KernelSpecManager(kernel_dirs=[str(spec.parent)])
    return KernelManager(kernel_name="signlab-test", kernel_spec_manager=ksm)


def execute(nb: dict, tmp_path: Path, timeout: int = 300) -> dict:
    """Run a notebook top to bottom with nbclient; returns it with its outputs (errors raise)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    src = str(Path(__import__("signlab").__file__).resolve().parents[1])
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1"}  # smoke runs are tiny: one torch thread, on a shared machine
    node = nbformat.reads(json.dumps(nb), as_version=4)  # joins the source lines nbclient expects as one string
    client = nbclient.NotebookClient(node, km=kernel_manager(tmp_path), timeout=timeout,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute(env=env)
    return node


def test_the_notebook_runs_top_to_bottom_on_the_smoke_budget(nb, tmp_path):
    pytest.importorskip("torch")
    t0 = time.perf_counter()
    done = execute(nb, tmp_path)
    seconds = time.perf_counter() - t0
    outputs = [o for c in done.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    shown = sum(1 for c in cells(nb, "code") if SHOW.match(source(c).strip()))
    assert len(images) >= shown  # each experiment's plot, plus the notebook's own
    print(f"notebook ran in {seconds:.0f} s")
