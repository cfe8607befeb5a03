"""Two recipes' bench/robustness.py results side by side: per split, per perturbation, and one bar chart.

    python bench/robustness_compare.py --a docs/robustness/degrade/medium-base-1208-s*.json \
        --b docs/robustness/degrade/medium-deg03-1208-s*.json \
        --labels "medium without faults" "medium with --degrade 0.3" --png docs/robustness/degrade/families.png

Each JSON is one run's report (`bench/robustness.py RUN --json FILE`); --a and --b list one file per split, in
the same order. Means are over the files; a perturbation's figure is its mean over its severities.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def load(paths: list[Path]) -> list[dict]:
    return [json.loads(p.read_text()) for p in paths]


def family_means(reports: list[dict]) -> dict[str, float]:
    return {f: 100 * statistics.mean(r["families"][f] for r in reports) for f in reports[0]["families"]}


def plot(rows: list[tuple[str, float, float]], labels: list[str], n: int, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], [a for _, a, _ in rows], height=0.4, label=labels[0])
    ax.barh([i - 0.2 for i in y], [b for _, _, b in rows], height=0.4, label=labels[1])
    ax.set_yticks(list(y))
    ax.set_yticklabels([f for f, _, _ in rows])
    ax.set_xlim(max(0, min(min(a, b) for _, a, b in rows) - 3), 100)
    ax.set_xlabel(f"accuracy, mean over severities and {n} splits (%)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("bench/robustness.py", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", nargs="+", type=Path, required=True)
    parser.add_argument("--b", nargs="+", type=Path, required=True)
    parser.add_argument("--labels", nargs=2, default=["a", "b"])
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()
    a, b = load(args.a), load(args.b)
    if len(a) != len(b):
        raise SystemExit("robustness_compare.py: --a and --b need one file per split each, as many of both")
    for ra, rb in zip(a, b, strict=True):
        print(f"{ra['run']}: clean {100 * ra['clean']:.2f} score {100 * ra['score']:.2f} | "
              f"{rb['run']}: clean {100 * rb['clean']:.2f} score {100 * rb['score']:.2f} | "
              f"{100 * (rb['score'] - ra['score']):+.2f}")
    for label, reports in zip(args.labels, (a, b), strict=True):
        scores = [100 * r["score"] for r in reports]
        sd = statistics.stdev(scores) if len(scores) > 1 else 0.0
        print(f"{label}: clean {statistics.mean(100 * r['clean'] for r in reports):.2f} %, "
              f"score {statistics.mean(scores):.2f} ± {sd:.2f} %")
    fa, fb = family_means(a), family_means(b)
    rows = sorted(((f, fa[f], fb[f]) for f in fa), key=lambda r: r[1])
    print(f"| perturbation | {args.labels[0]} | {args.labels[1]} | change, points |\n|---|---|---|---|")
    for f, va, vb in rows:
        print(f"| {f} | {va:.2f} % | {vb:.2f} % | {vb - va:+.2f} |")
    if args.png:
        plot(rows, args.labels, len(a), args.png)


if __name__ == "__main__":
    main()
