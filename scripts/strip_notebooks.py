"""Strip outputs, execution counts and run metadata from notebooks, so git holds only their sources.

    python scripts/strip_notebooks.py            # every notebooks/*.ipynb, in place
    python scripts/strip_notebooks.py --check    # list the ones that need it; exit 1 if any
    python scripts/strip_notebooks.py a.ipynb …  # these files

Plain JSON, no Jupyter needed; the layout is nbformat's own (one-space indent, a final newline), so a notebook
saved by Jupyter and then stripped gives a small diff.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
RUN_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")  # what a run or a click leaves on a cell


def stripped(nb: dict) -> dict:
    nb = json.loads(json.dumps(nb))  # a deep copy
    for cell in nb.get("cells", []):
        meta = cell.setdefault("metadata", {})
        for key in RUN_METADATA:
            meta.pop(key, None)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb.get("metadata", {}).pop("widgets", None)  # widget state: output under another name
    return nb


def dumps(nb: dict) -> str:
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook needs stripping")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(NOTEBOOKS.glob("*.ipynb"))
    unclean = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        clean = dumps(stripped(json.loads(text)))
        if clean != text:
            unclean.append(path)
            if not args.check:
                path.write_text(clean, encoding="utf-8")
    for path in unclean:
        print(f"{path}: {'has outputs or run metadata' if args.check else 'stripped'}")
    if args.check and unclean:
        print("fix: python scripts/strip_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
