"""Synthetic → real on GTSRB: how far signlab's drawn and rendered signs get on real photos, alone and added to
real training sets of several sizes, and which of the renderer's effects matter.

    .venv/bin/python bench/synthetic_to_real.py [--real ../shared/datasets/GTSRB-original/Final_Training]

Every condition trains through the product, `signlab train --preset fast --val-fraction 0 --epochs E`, on a
GTSRB-layout folder of symlinks (real files, rendered files, or both; the rendered tracks renumbered 9TTTTT so
they never share a track id with a real one), and is scored by `signlab.evaluate` (test-time augmentation, as
the preset says) with the run's *last* weights on real images that training never saw: not even to pick a
checkpoint, which would tune on the test set.

- The real validation part: 20 % of the real tracks (split_indices, track-aware), one per --split-seeds seed;
  the real training sizes are whole tracks drawn from the other 80 % until ~N images a class (nested: the
  100-a-class tracks are the first ones of the 1,000-a-class set).
- Equal training budget: E = max(2, round(--images-seen / training images)), so a small set is not also a
  shorter training, and adding synthetic images does not also add steps.
- Ablations: synthetic-only, one effect group off at a time (RenderParams.without; every other draw of the
  renderer is unchanged), scored on *all* real images (a synthetic-only model never saw any). Each row is
  trained with every --ablation-seeds seed: one synthetic-only run lands ~2 points from the next.

Finished runs are kept in --work and reused (delete the folder to measure again). Writes --json and --png.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from runs import train_run
from signlab.api import evaluate
from signlab.data import ImageSet, load_images, split_indices
from signlab.layouts import GTSRB_COLUMNS
from signlab.synth.dataset import write_dataset
from signlab.synth.render import RenderParams

ROOT = Path(__file__).resolve().parents[1]
SYNTH_TRACK = "9"  # prefix of rendered track numbers: GTSRB's own are 5 digits, so 9TTTTT never clashes
PLAIN = "plain background"
ABLATIONS = {  # name: effect groups switched off (RenderParams.without); PLAIN is handled in render_set
    "all effects": (),
    "no geometry (perspective, rotation)": ("geometry",),
    "no blur (motion, defocus)": ("blur",),
    "no light (low light, glare, colour cast)": ("light",),
    "no occlusion": ("occlusion",),
    "no fading": ("fade",),
    "no sensor (noise, JPEG, colour fringes)": ("noise", "jpeg", "chroma"),
    "no sensor noise": ("noise",),
    "no JPEG artefacts": ("jpeg",),
    "no colour fringes": ("chroma",),
    f"{PLAIN} (flat colour, no post)": ("post",),
    "no effects (RenderParams().only())": "only",
}
Row = list[str]  # a GTSRB CSV row: Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId


# ---------------------------------------------------------------- data folders


def csv_rows(root: Path) -> dict[str, Row]:
    """Every image's CSV row of a GTSRB training folder, by the path signlab.data lists it under."""
    images = root / "Images" if (root / "Images").is_dir() else root
    rows = {}
    for path in sorted(images.glob("*/GT-[0-9]*.csv")):
        with open(path, newline="") as fh:
            for row in list(csv.reader(fh, delimiter=";"))[1:]:
                if row:
                    rows[str(path.parent / row[0].strip())] = row
    return rows


def write_layout(folder: Path, parts: list[tuple[ImageSet, dict[str, Row], str]]) -> Path:
    """A GTSRB training folder of symlinks to the images of each (set, its CSV rows, name prefix), with merged
    GT-000NN.csv files; written once (a 'complete' marker), so a rerun reuses its decode cache."""
    if (folder / "complete").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    by_class: dict[int, list[Row]] = {}
    for ds, rows, prefix in parts:
        for path, label in zip(ds.paths, ds.labels, strict=True):
            row = list(rows[path])
            name = prefix + row[0]
            target = folder / "Images" / f"{label:05d}" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(Path(path).resolve())
            by_class.setdefault(int(label), []).append([name, *row[1:]])
    for label, rows in by_class.items():
        with open(folder / "Images" / f"{label:05d}" / f"GT-{label:05d}.csv", "w", newline="") as fh:
            writer = csv.writer(fh, delimiter=";", lineterminator="\n")
            writer.writerow(GTSRB_COLUMNS)
            writer.writerows(rows)
    (folder / "complete").write_text("")
    return folder


def sample_tracks(ds: ImageSet, per_class: int | None, seed: int) -> np.ndarray:
    """Indices of whole tracks, per class, until ~per_class images (round(per_class / mean track length)
    tracks, at least one); None: all. One track order per class for every size, so the sizes are nested."""
    if per_class is None:
        return np.arange(len(ds))
    keep = []
    for label in np.unique(ds.labels):
        members = np.flatnonzero(ds.labels == label)
        tracks = np.random.default_rng([seed, int(label)]).permutation(np.unique(ds.tracks[members]))
        k = max(1, round(per_class * len(tracks) / len(members)))
        keep.append(members[np.isin(ds.tracks[members], tracks[:k])])
    return np.sort(np.concatenate(keep))


def flat_scenes(folder: Path, n: int = 16) -> Path:
    """n images of one flat, muted colour each: backgrounds with no texture at all, for the plain ablation."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        colour = tuple(int(c) for c in rng.integers(40, 220) + rng.integers(-25, 26, size=3))
        Image.new("RGB", (64, 64), colour).save(folder / f"flat{i:02d}.png")
    return folder


def render_set(work: Path, name: str, per_class: int, seed: int, off) -> Path:
    """Rendered signs with the effects `off` switched off (cached in work/synth/NAME)."""
    out = work / "synth" / slug(name)
    if (out / "complete").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    params, scenes = RenderParams(), None
    if off == "only":
        params = params.only()
    elif off:
        params = params.without(*off)
    if name.startswith(PLAIN):  # every track's background is a crop of one flat colour
        params, scenes = replace(params, scene_p=1.0), flat_scenes(work / "synth" / "flat-scenes")
    start = time.perf_counter()
    write_dataset(out, per_class, seed=seed, params=params, backgrounds=scenes, workers=2)
    (out / "complete").write_text(f"{time.perf_counter() - start:.1f} s\n")
    return out


def slug(name: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


# ---------------------------------------------------------------- one condition


def run_condition(work: Path, name: str, train: Path, tests: dict[str, Path], n_train: int, args,
                  seed: int = 0) -> dict:
    """Train on `train` with the fast preset, equal images seen; score the last weights on each test folder
    (accuracy: on the first)."""
    results = work / "results.json"
    done = json.loads(results.read_text()) if results.is_file() else {}
    if name in done:
        return done[name]
    epochs = max(2, round(args.images_seen / n_train))
    run = work / "runs" / slug(name)
    start = time.perf_counter()
    train_run(run, ["--preset", "fast", "--data", str(train), "--val-fraction", "0", "--epochs", str(epochs),
                    "--seed", str(seed)], reuse=True)
    wall = time.perf_counter() - start
    metrics = list(csv.DictReader(open(run / "metrics.csv")))
    res = {"n_train": n_train, "epochs": epochs, "seed": seed, "train_seconds": float(metrics[-1]["train_seconds"]),
           "train_wall_seconds": wall, "tests": {}}
    for test, folder in tests.items():
        summary = evaluate(run / "last.safetensors", folder, device="cpu")
        res["tests"][test] = {"accuracy": summary["accuracy"], "n": summary["n"], "tta": summary["tta"],
                              "tracks_with_errors": (summary.get("tracks") or {}).get("with_errors"),
                              "tracks": (summary.get("tracks") or {}).get("n"),
                              "per_class": {c: v["accuracy"] for c, v in summary["per_class"].items()},
                              "most_confused": summary["most_confused"][:5]}
    res["accuracy"] = res["tests"][next(iter(tests))]["accuracy"]
    scores = ", ".join(f"{v['accuracy']:.2%} on {k} ({v['n']})" for k, v in res["tests"].items())
    print(f"{name}: {scores}; {n_train} training images, {epochs} epochs, {res['train_seconds']:.0f} s", flush=True)
    done = json.loads(results.read_text()) if results.is_file() else {}
    results.write_text(json.dumps({**done, name: res}, indent=1))
    return res


# ---------------------------------------------------------------- the experiments


def curves(work: Path, real: ImageSet, real_rows: dict, synth: Path, args) -> dict:
    """Per split seed s (training seed s too): synthetic only, and each real size without and with the
    synthetic set. The synthetic-only model is also scored on every real image, since it never saw one."""
    syn = load_images(synth)
    syn_rows = csv_rows(synth)
    out: dict = {}
    for s in args.split_seeds:
        tr, va = split_indices(real, val_fraction=0.2, seed=s)
        train_part = real.subset(tr)
        val = write_layout(work / "data" / f"split{s}-val", [(real.subset(va), real_rows, "")])
        tests = {"real validation": val, "all real": args.real}
        out[s] = {"synthetic only": run_condition(work, f"split{s} synthetic only", synth, tests, len(syn), args, s)}
        for size in args.sizes:
            part = train_part.subset(sample_tracks(train_part, size, seed=s))
            label = "all" if size is None else str(size)
            for with_syn in (False, True):
                parts = [(part, real_rows, "")] + ([(syn, syn_rows, SYNTH_TRACK)] if with_syn else [])
                name = f"real {label}/class" + (" + synthetic" if with_syn else "")
                folder = write_layout(work / "data" / f"split{s}-{slug(name)}", parts)
                res = run_condition(work, f"split{s} {name}", folder, {"real validation": val},
                                    len(part) + with_syn * len(syn), args, s)
                out[s][name] = {**res, "n_real": len(part)}
    return out


def ablations(work: Path, all_real: Path, args) -> dict:
    """Synthetic only, one effect group off at a time, scored on every real image; the full renderer x seeds."""
    out = {}
    for name, off in ABLATIONS.items():
        folder = render_set(work, name, args.ablation_per_class, args.render_seed, off)
        n = len(load_images(folder))
        out[name] = [run_condition(work, f"ablation {name} seed{t}", folder, {"all real": all_real}, n, args, t)
                     for t in args.ablation_seeds]
    return out


# ---------------------------------------------------------------- report


def mean_sd(values: list[float], digits: int = 1) -> str:
    sd = f" ± {np.std(values, ddof=1):.{digits}%}" if len(values) > 1 else ""
    return f"{np.mean(values):.{digits}%}{sd}"


def tables(report: dict) -> str:
    """The curves and the ablations as markdown: every run's figure, their mean and sd."""
    seeds = list(report["curves"])
    lines = [f"| training data | real images (per split) | synthetic | {' | '.join(f'split {s}' for s in seeds)} "
             "| mean ± sd |", "|---|---|---|" + "---|" * (len(seeds) + 1)]
    for name in report["curves"][seeds[0]]:
        cells = [report["curves"][s][name] for s in seeds]
        accs = [c["accuracy"] for c in cells]
        n_real = " / ".join(f"{c.get('n_real', 0):,}" for c in cells)
        n_syn = cells[0]["n_train"] - cells[0].get("n_real", 0)
        lines.append(f"| {name} | {n_real} | {n_syn:,} | {' | '.join(f'{a:.2%}' for a in accs)} | {mean_sd(accs, 2)} |")
    syn = [report["curves"][s]["synthetic only"]["tests"]["all real"]["accuracy"] for s in seeds]
    n_all = report["curves"][seeds[0]]["synthetic only"]["tests"]["all real"]["n"]
    runs = " / ".join(f"{a:.2%}" for a in syn)
    lines.append(f"\nsynthetic only, scored on all {n_all:,} real images: {runs} (training seeds "
                 f"{', '.join(map(str, seeds))}), {mean_sd(syn)}")
    lines += ["", *hardest_classes([report["curves"][s]["synthetic only"]["tests"]["all real"] for s in seeds])]
    if report["ablations"]:
        base = [r["accuracy"] for r in report["ablations"]["all effects"]]
        lines += ["", "| synthetic only, renderer | per seed | mean ± sd | Δ vs all effects ± se |",
                  "|---|---|---|---|"]
        for name, runs in report["ablations"].items():
            accs = [r["accuracy"] for r in runs]
            delta = "—"
            if name != "all effects" and min(len(accs), len(base)) > 1:
                se = math.sqrt(np.var(accs, ddof=1) / len(accs) + np.var(base, ddof=1) / len(base))
                delta = f"{np.mean(accs) - np.mean(base):+.1%} ± {se:.1%}"
            lines.append(f"| {name} | {' / '.join(f'{a:.1%}' for a in accs)} | {mean_sd(accs)} | {delta} |")
    return "\n".join(lines)


def hardest_classes(tests: list[dict], k: int = 8) -> list[str]:
    """The classes the synthetic-only models get most wrong on real photos, and what they take them for."""
    from signlab.classes import GTSRB_CLASS_NAMES

    if not all("per_class" in t for t in tests):
        return []
    mean = {int(c): np.mean([t["per_class"][c] for t in tests]) for c in tests[0]["per_class"]}
    lines = ["| class (synthetic only, mean over seeds) | accuracy on its real images |", "|---|---|"]
    lines += [f"| {c} {GTSRB_CLASS_NAMES[c]} | {mean[c]:.1%} |" for c in sorted(mean, key=mean.get)[:k]]
    pairs = [f"{p['true']} → {p['predicted']} ({p['count']})" for t in tests for p in t["most_confused"][:3]]
    return lines + ["", "most confused (true → predicted, images), per seed: " + ", ".join(pairs)]


def plot(report: dict, png: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.5, 4.6), layout="constrained")
    ax, bx = fig.subplots(1, 2, width_ratios=(1, 1.3))
    splits = list(report["curves"].values())
    for with_syn, colour, label in ((False, "C0", "real only"), (True, "C3", "real + 21,500 rendered")):
        names = [n for n in splits[0] if n.startswith("real") and n.endswith("+ synthetic") == with_syn]
        x = [np.mean([sp[n]["n_real"] for sp in splits]) for n in names]
        per_split = np.array([[sp[n]["accuracy"] for n in names] for sp in splits])  # (splits, sizes)
        for row in per_split:
            ax.plot(x, row, color=colour, alpha=0.3, lw=0.8, marker=".")
        ax.plot(x, per_split.mean(0), color=colour, marker="o", label=f"{label} (mean; thin: each split)")
    syn = [sp["synthetic only"]["accuracy"] for sp in splits]
    ax.axhspan(min(syn), max(syn), color="C2", alpha=0.25, label="rendered only (range over splits)")
    ax.set(xscale="log", xlabel="real training images (whole tracks: 100, 1,000, all a class)",
           ylabel="accuracy on the real validation tracks", title="Real data, with and without rendered signs")
    ax.legend(fontsize=8, loc="center right")
    names = list(report["ablations"])
    accs = [[r["accuracy"] for r in report["ablations"][n]] for n in names]
    y = np.arange(len(names))[::-1]
    base = accs[0]
    bx.axvspan(np.mean(base) - np.std(base, ddof=1), np.mean(base) + np.std(base, ddof=1), color="C2", alpha=0.2)
    bx.barh(y, [np.mean(a) for a in accs], color=["C2"] + ["C7"] * (len(names) - 1), alpha=0.8)
    for yi, a in zip(y, accs, strict=True):
        bx.plot(a, [yi] * len(a), "k.", ms=5)
        bx.text(max(a) + 0.004, yi, f"{np.mean(a):.1%}", va="center", fontsize=8)
    bx.set_yticks(y, names, fontsize=8)
    lo = min(min(a) for a in accs)
    bx.set(xlim=(max(0.0, lo - 0.1), max(max(a) for a in accs) + 0.05),
           xlabel="accuracy on all 39,209 real GTSRB training images (dots: training seeds)",
           title="Rendered only: one effect group off at a time")
    png.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def check_work(args) -> None:
    """A work folder holds the runs of one set of measuring settings: reusing them under others would mix."""
    keys = ("real", "per_class", "ablation_per_class", "render_seed", "images_seen")
    settings = {k: str(getattr(args, k)) for k in keys}
    record = args.work / "settings.json"
    if record.is_file() and json.loads(record.read_text()) != settings:
        raise SystemExit(f"{args.work}: holds runs made with other settings ({record}); pass another --work")
    args.work.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", type=Path, default=ROOT.parent / "shared/datasets/GTSRB-original/Final_Training")
    p.add_argument("--work", type=Path, default=ROOT / "bench/results/synthetic-to-real")
    p.add_argument("--per-class", type=int, default=500, help="rendered images a class for the curves")
    p.add_argument("--ablation-per-class", type=int, default=200, help="rendered images a class per ablation")
    p.add_argument("--render-seed", type=int, default=100)
    p.add_argument("--sizes", default="100,1000,all", help="real images a class, 'all' for every one")
    p.add_argument("--split-seeds", default="0,1,2")
    p.add_argument("--ablation-seeds", default="0,1,2", help="training seeds of each ablation row")
    p.add_argument("--images-seen", type=int, default=90_000, help="training images seen per run")
    p.add_argument("--skip-ablations", action="store_true")
    p.add_argument("--json", type=Path, default=ROOT / "docs/synth/synthetic_to_real.json")
    p.add_argument("--png", type=Path, default=ROOT / "docs/synth/synthetic_to_real.png")
    args = p.parse_args()
    args.sizes = [None if s == "all" else int(s) for s in args.sizes.split(",")]
    args.split_seeds = [int(s) for s in args.split_seeds.split(",")]
    args.ablation_seeds = [int(s) for s in args.ablation_seeds.split(",")]
    check_work(args)
    start = time.perf_counter()
    real = load_images(args.real)
    real_rows = csv_rows(args.real)
    synth = render_set(args.work, f"curves {args.per_class} a class", args.per_class, args.render_seed, ())
    report = {"command": "python bench/synthetic_to_real.py " + " ".join(sys.argv[1:]),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=ROOT).stdout.strip(),
              "machine": f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores",
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "curves": curves(args.work, real, real_rows, synth, args)}
    report["ablations"] = {} if args.skip_ablations else ablations(args.work, args.real, args)
    report["seconds"] = time.perf_counter() - start  # this invocation's, without the runs it reused
    runs = json.loads((args.work / "results.json").read_text()).values()
    report["all_runs"] = {"count": len(runs), "train_seconds": sum(r["train_seconds"] for r in runs),
                          "train_wall_seconds": sum(r["train_wall_seconds"] for r in runs)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report["tables"] = tables(report)
    args.json.write_text(json.dumps(report, indent=1))
    print(report["tables"])
    if report["ablations"]:
        plot(report, args.png)
    print(f"total {report['seconds'] / 60:.1f} min (this invocation; reused runs cost nothing)")


if __name__ == "__main__":
    main()
