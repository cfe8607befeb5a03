"""The `signlab` command: train, evaluate, predict, info, lab."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from signlab.errors import UserError

# Train flags: (flag, config field, type, help). Defaults live in TrainConfig, not here: a flag left out
# is None, so `--resume` can tell the flags a user gave from the run's saved config.
TRAIN_FLAGS = [
    ("--data", "data", str, "dataset folder (default: the shipped GTSRB sample)"),
    ("--val-data", "val_data", str, "validate on this folder instead of a split of --data"),
    ("--val-fraction", "val_fraction", float, "share of tracks held out for validation (default 0.1)"),
    ("--model", "model", str, "model name: mlp, lenet, signnet (default signnet)"),
    ("--epochs", "epochs", int, "epochs to train"),
    ("--batch-size", "batch_size", int, "images per step"),
    ("--lr", "lr", float, "peak learning rate"),
    ("--optimizer", "optimizer", str, "sgd (Nesterov momentum) or adamw"),
    ("--weight-decay", "weight_decay", float, "weight decay"),
    ("--label-smoothing", "label_smoothing", float, "label smoothing of cross-entropy"),
    ("--loss", "loss", str, "cross_entropy or squared (the lecture's squared error)"),
    ("--init", "init", str, "default or normal (the lecture's N(0, 0.1))"),
    ("--ema", "ema", float, "EMA decay of the weights per step (0 = off)"),
    ("--image-size", "image_size", int, "input side in pixels"),
    ("--crop", "crop", str, "roi (crop the annotated sign) or full (whole frame)"),
    ("--contrast", "contrast", str, "none or equalize (histogram equalisation of each image's luminance)"),
    ("--flips", "flips", float, "probability of a class-aware flip, GTSRB classes only (0 = off)"),
    ("--warmup", "warmup", float, "share of the steps spent warming up to the peak learning rate"),
    ("--out", "out", str, "run folder (default runs/latest)"),
    ("--seed", "seed", int, "random seed"),
    ("--device", "device", str, "auto, cpu or cuda"),
    ("--threads", "threads", int, "CPU threads (default: all cores)"),
    ("--keep", "keep", int, "epoch checkpoints kept besides the best (default 3)"),
    ("--max-bad-fraction", "max_bad_fraction", float, "stop if more of the images are unusable (default 0.01)"),
    ("--max-image-pixels", "max_image_pixels", int, "refuse larger images as decompression bombs"),
]
SWITCHES = [
    ("--resume", "resume", True, "continue from the newest good checkpoint in --out"),
    ("--overwrite", "overwrite", True, "start again in a run folder that already holds a run"),
    ("--force-resume", "force_resume", True, "resume even if flags change the saved config"),
    ("--no-bf16", "bf16", False, "train in fp32 (bf16 autocast is on where the hardware has it)"),
    ("--no-channels-last", "channels_last", False, "keep NCHW memory layout"),
    ("--no-progress", "progress", False, "no progress bar"),
    ("--compile", "compile", True, "torch.compile the model (the first step compiles: ~45 s on a CPU)"),
    ("--tta", "tta", True, "evaluate and predict apply test-time augmentation to this model by default"),
]
AUGMENT_FLAGS = [("--rotate", "rotate_degrees", float, "random rotation ± this many degrees (default 10)"),
                 ("--scale", "scale", float, "random zoom 1 ± this (default 0.1)"),
                 ("--translate", "translate", float, "random shift ± this share of the side (default 0.1)"),
                 ("--erase", "erase", float, "probability of erasing a random rectangle per image (0 = off)"),
                 ("--saturation", "saturation", float, "saturation jitter: colour kept is 1 ± this (0 = off)"),
                 ("--color-cast", "color_cast", float, "per-channel gain 1 ± this and shift ± this (0 = off)")]


def int_list(text: str) -> list[int]:
    """argparse type for comma-separated counts: "16,32,64"."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 16,32,64") from None


MODEL_FLAGS = [("--hidden", "hidden", int, "mlp: hidden units"),
               ("--activation", "activation", str, "mlp: sigmoid, tanh or relu"),
               ("--widths", "widths", int_list, "signnet: channels per stage, e.g. 16,32,64"),
               ("--depth", "depth", int_list, "signnet: 3x3 convs per stage, e.g. 2,2,2 (one count: every stage)")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signlab", description="Traffic-sign recognition on GTSRB.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model")
    t.add_argument("--preset", help="named config (fast, best, sample) or a .json file; flags override it")
    for flag, dest, typ, text in TRAIN_FLAGS + AUGMENT_FLAGS + MODEL_FLAGS:
        t.add_argument(flag, dest=dest, type=typ, default=None, help=text)
    for flag, dest, value, text in SWITCHES:
        t.add_argument(flag, dest=dest, action="store_const", const=value, default=None, help=text)

    e = sub.add_parser("evaluate", help="evaluate a trained model")
    e.add_argument("target", metavar="RUN_DIR_OR_WEIGHTS")
    e.add_argument("--data", help="dataset folder (default: the run's validation data)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--report", metavar="DIR", help="write confusion matrix, per-class CSV and galleries here")
    e.add_argument("--device", default="auto")
    e.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation (default: as the model was trained to be used)")

    p = sub.add_parser("predict", help="classify image files")
    p.add_argument("target", metavar="RUN_DIR_OR_WEIGHTS")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation (default: as the model was trained to be used)")

    i = sub.add_parser("info", help="describe a dataset folder")
    i.add_argument("dir", metavar="DIR")

    lab = sub.add_parser("lab", help="the lecture's experiments and slide examples")
    lab.add_argument("name", nargs="?", help="experiment name (see --list)")
    lab.add_argument("--list", action="store_true", help="list the experiments")
    lab.add_argument("--data", help="dataset folder (default: the shipped sample)")
    lab.add_argument("--out", default="runs/lab", help="folder for tables and plots")
    lab.add_argument("--budget", default="full", choices=["full", "smoke"], help=argparse.SUPPRESS)
    return parser


def train_overrides(args: argparse.Namespace) -> dict:
    """The config fields the user set: the preset's, then the flags given (flags win)."""
    from signlab.config import load_preset

    overrides = load_preset(args.preset) if args.preset else {}
    if args.model and args.model != overrides.get("model", args.model):
        overrides.pop("model_options", None)  # a preset's model options belong to the preset's model
    for _, dest, *_ in TRAIN_FLAGS + SWITCHES:
        value = getattr(args, dest)
        if value is not None:
            overrides[dest] = value
    for key, flags in (("augment", AUGMENT_FLAGS), ("model_options", MODEL_FLAGS)):  # nested: merge, not replace
        given = {dest: getattr(args, dest) for _, dest, *_ in flags if getattr(args, dest) is not None}
        if given:
            overrides[key] = {**overrides.get(key, {}), **given}
    if args.preset:
        overrides["preset"] = args.preset
    if not args.resume:  # on resume the saved config already holds them
        from signlab.models import train_defaults

        for key, value in train_defaults(overrides.get("model", "signnet")).items():
            overrides.setdefault(key, value)
    for key in ("data", "val_data"):  # absolute paths, so a resume from another folder finds the same data
        if overrides.get(key):
            overrides[key] = str(Path(overrides[key]).resolve())
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from signlab.config import TrainConfig
    from signlab.train import train

    overrides = train_overrides(args)
    cfg = TrainConfig.from_dict(overrides)
    train(cfg, overrides)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from signlab.evaluate import evaluate, format_summary

    summary = evaluate(args.target, args.data, args.report, args.device, args.tta)
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from signlab.predict import load_model, pick_device, predict_files

    if args.top_k < 1:
        raise UserError(f"--top-k {args.top_k}: must be at least 1")
    device = pick_device(args.device)
    results = predict_files(load_model(args.target, device), args.paths, device, args.top_k, tta=args.tta)
    if args.json:
        print(json.dumps(results))
        return 0
    for r in results:
        if "error" in r:
            print(f"{r['path']}: skipped ({r['error']})")
            continue
        best = ", ".join(f"{t['class_id']} {t['name']} {t['probability']:.3f}" for t in r["top"])
        print(f"{r['path']}: {best}")
    return 1 if all("error" in r for r in results) else 0


def cmd_info(args: argparse.Namespace) -> int:
    from signlab.data import load_images

    ds = load_images(args.dir, max_bad_fraction=1.0, progress=True)
    counts = ds.counts()
    tracks = ds.tracks[ds.tracks >= 0]
    print(f"{args.dir}: layout {ds.layout}, {len(ds)} images, {len(ds.class_names)} classes, "
          f"{len(set(tracks.tolist())) if len(tracks) else 'no'} tracks, {len(ds.skipped)} unusable")
    for cid, name in enumerate(ds.class_names):
        n_tracks = len(set(ds.tracks[(ds.labels == cid) & (ds.tracks >= 0)].tolist()))
        print(f"  {cid:>3} {name:<52} {counts[cid]:>6} images {n_tracks:>4} tracks")
    for path, reason in ds.skipped:
        print(f"  unusable: {path}: {reason}")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from signlab.lab.cli import run_lab

    return run_lab(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "info": cmd_info,
               "lab": cmd_lab}[args.command]
    try:
        return handler(args)
    except UserError as e:
        print(f"signlab {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # output piped into `head` that closed early: not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"signlab {args.command}: interrupted", file=sys.stderr)
        return 130
