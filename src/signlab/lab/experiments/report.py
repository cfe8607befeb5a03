"""The torch-free part of what every lab experiment shares: its budget, its table, its figure.

NumPy-only experiments (approximation) import these from here; common.py re-exports them for the rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from signlab.errors import UserError

BUDGETS = ("full", "smoke")


def check_budget(budget: str) -> None:
    if budget not in BUDGETS:
        raise UserError(f"budget {budget!r}: use one of {', '.join(BUDGETS)}")


# --- reporting ----------------------------------------------------------------------------------


def fmt(v: object) -> str:
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return f"{v:.3g}" if (v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4)) else f"{v:.3f}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str = "") -> str:
    """A plain-text table with right-aligned numbers; printed and returned."""
    cells = [list(headers)] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    text = "\n".join(([title] if title else []) + lines)
    print(text, flush=True)
    return text


def new_figure(ncols: int = 2, nrows: int = 1, size: tuple[float, float] = (5.0, 3.6)) -> tuple[Figure, list]:
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def save_figure(fig: Figure, out: Path, name: str) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    FigureCanvasAgg(fig)  # attach an Agg canvas: no pyplot, no global backend state
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")
    return path


def all_finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)
