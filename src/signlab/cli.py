"""The `signlab` command: train, evaluate, predict, detect, export, serve, info, download, synth, lab."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import MISSING

from signlab.errors import UserError
from signlab.options import Option, above, argparse_type, at_least, between, declared, each, int_list, one_of, size_pair
from signlab.runtime import DEVICES


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage block) and exit 2, like every other user error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def add_options(parser: argparse.ArgumentParser, declared: list[tuple[str, object, Option]]) -> None:
    """Flags from option declarations (dest, default, Option): a bool default is a switch that flips it; any
    other default's type parses and the Option's check validates the value as argparse reads it. A flag left
    out is None, so resolve_train_config can tell the flags a user gave from presets and saved configs."""
    for dest, default, opt in declared:
        if opt.flag is None:
            continue
        text = opt.help.replace("%", "%%")
        if isinstance(default, bool) and opt.negatable:
            parser.add_argument(opt.flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif isinstance(default, bool):
            parser.add_argument(opt.flag, dest=dest, action="store_const", const=not default, default=None,
                                help=text)
        else:
            base = type(default) if default is not None else str
            parser.add_argument(opt.flag, dest=dest, type=argparse_type(opt, base), default=None, help=text)


def train_options() -> list[tuple[str, object, Option]]:
    """Every training flag: TrainConfig's fields, augmentation (dest augment.NAME), model options."""
    from signlab.augment import AugmentConfig
    from signlab.config import MODEL_OPTIONS, TrainConfig

    def default(f):
        return f.default if f.default is not MISSING else None

    found = [(f.name, default(f), o) for f, o in declared(TrainConfig)]
    found += [(f"augment.{f.name}", default(f), o) for f, o in declared(AugmentConfig)]
    found += [(f"model_options.{name}", None, o) for name, o in MODEL_OPTIONS.items()]
    return found


BACKENDS = ("torch", "onnx")
INFERENCE_OPTIONS = [  # evaluate, predict and serve
    ("device", "auto", Option("--device", "auto, cpu or cuda", one_of(*DEVICES))),
    ("batch_size", 256, Option("--batch-size", "images per forward pass (default 256)", at_least(1))),
    ("backend", "torch", Option("--backend", "torch, or onnx: onnxruntime on the exported model "
                                "(signlab export; no test-time augmentation)",
                                one_of(*BACKENDS))),
]


def threshold_value(text: str) -> float | str:
    """--threshold: a score in [0, 1], or "run" for the threshold the detection run chose (operating_point.json)."""
    if text == "run":
        return text
    return argparse_type(Option("--threshold", "", between(0, 1)), float)(text)


def build_parser() -> argparse.ArgumentParser:
    from signlab.models import list_models

    parser = Parser(prog="signlab", description="Traffic-sign recognition on GTSRB.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model")
    add_options(t, train_options())
    model_flag = next(a for a in t._actions if a.dest == "model")
    model_flag.help = f"model name: {', '.join(list_models())} (default signnet)"

    e = sub.add_parser("evaluate", help="evaluate a trained model")
    e.add_argument("target", metavar="RUN_DIR_OR_WEIGHTS")
    e.add_argument("--data", help="dataset folder (default: the run's validation data)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--report", metavar="DIR", help="write confusion matrix, per-class CSV and galleries here")
    e.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation (default: as the model was trained to be used; detection runs: "
                   "off, --tta: the finder also looks at each scene's mirror image)")
    e.add_argument("--fp-budget", type=argparse_type(Option("--fp-budget", "", at_least(0)), float), metavar="F",
                   help="detection runs: false positives per scene allowed at the operating point (default 0.05)")
    e.add_argument("--no-verify", dest="verify", action="store_false",
                   help="detection runs: leave the run's verifier out (runs trained with --verify)")
    add_options(e, INFERENCE_OPTIONS)

    p = sub.add_parser("predict", help="classify image files")
    p.add_argument("target", metavar="RUN_DIR_OR_WEIGHTS")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--top-k", type=argparse_type(Option("--top-k", "", at_least(1)), int), default=3,
                   help="classes listed per image (default 3)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation (default: as the model was trained to be used)")
    add_options(p, INFERENCE_OPTIONS)

    from signlab.detection.detect import DEFAULT_THRESHOLD

    dt = sub.add_parser("detect", help="find and name the signs in whole road scenes: images, folders, videos")
    dt.add_argument("target", metavar="RUN_DIR", help="a detection run (signlab train --task detect)")
    dt.add_argument("paths", nargs="+", metavar="IMAGE_OR_FOLDER",
                    help="scenes, folders of scenes (every image, sorted), or videos (.mp4, .avi, .mkv, .mov, .webm)")
    dt.add_argument("--json", action="store_true", help="print one JSON array, one object per scene (README: Detect)")
    dt.add_argument("--out", metavar="DIR", help="write each scene with its boxes and sign names drawn "
                    "(NAME.annotated.jpg), and for a video NAME.annotated.mp4 and NAME.detections.csv")
    dt.add_argument("--threshold", type=threshold_value, default=DEFAULT_THRESHOLD,
                    help=f"lowest score kept (default {DEFAULT_THRESHOLD}; 0.01 for the whole precision-recall "
                    "range; run: the run's operating point, <= 0.05 false positives per validation scene)")
    dt.add_argument("--device", default="auto", type=argparse_type(Option("--device", "", one_of(*DEVICES)), str),
                    help="auto, cpu or cuda")
    dt.add_argument("--backend", type=argparse_type(Option("--backend", "", one_of(*BACKENDS)), str),
                    help="torch, or onnx: onnxruntime on the files of signlab export RUN (default: onnx for such "
                    "a folder, else torch)")
    dt.add_argument("--no-verify", dest="verify", action="store_false",
                    help="leave the run's verifier out (runs trained with --verify): finder and classifier only")
    dt.add_argument("--tta", action="store_true",
                    help="the finder also looks at each scene's mirror image and averages the two (twice its time)")

    x = sub.add_parser("export", help="export a trained model to ONNX (and int8), with a model card beside it")
    x.add_argument("target", metavar="RUN_DIR_OR_WEIGHTS")
    x.add_argument("--format", default="onnx", type=argparse_type(Option("--format", "", one_of("onnx")), str),
                   help="onnx (default)")
    x.add_argument("--int8", action="store_true",
                   help="also write an int8 model (onnxruntime static quantisation, calibrated on training images)")
    x.add_argument("--out", metavar="FILE", help="the .onnx file to write (default: model.onnx in the run folder); "
                   "for a detection run a folder (default RUN/export)")

    v = sub.add_parser("serve", help="a web page and a JSON API that classify photos, on 127.0.0.1 unless told")
    v.add_argument("target", metavar="RUN_DIR_OR_WEIGHTS")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=argparse_type(Option("--port", "", between(1, 65535)), int), default=8000,
                   help="TCP port (default 8000)")
    v.add_argument("--max-upload-mb", type=argparse_type(Option("--max-upload-mb", "", above(0)), float),
                   default=10.0, help="largest upload accepted, in MB (default 10)")
    v.add_argument("--max-concurrent", type=argparse_type(Option("--max-concurrent", "", at_least(1)), int),
                   default=8, help="requests classified at once; more get 503 (default 8)")
    add_options(v, INFERENCE_OPTIONS)

    i = sub.add_parser("info", help="describe a dataset folder")
    i.add_argument("dir", metavar="DIR")

    lab = sub.add_parser("lab", help="the lecture's experiments and slide examples")
    lab.add_argument("name", nargs="?", help="experiment name (see --list)")
    lab.add_argument("--list", action="store_true", help="list the experiments")
    lab.add_argument("--data", help="dataset folder (default: signlab's drawn signs, rendered once)")
    lab.add_argument("--out", default="runs/lab", help="folder for tables and plots")
    lab.add_argument("--budget", default="full", choices=["full", "smoke"], help=argparse.SUPPRESS)

    from signlab.download import DATASETS, ENV_URL, url_complaint

    d = sub.add_parser("download", help="download GTSRB or GTSDB, verify it and unpack it where signlab reads it")
    d.add_argument("dataset", metavar="DATASET", type=argparse_type(Option("DATASET", "", one_of(*DATASETS)), str),
                   help=" or ".join(DATASETS))
    d.add_argument("--to", default="data", metavar="DIR", help="folder to put the data in (default: data)")
    d.add_argument("--url-base", metavar="URL", type=argparse_type(Option("--url-base", "", url_complaint), str),
                   help=f"a mirror holding the official archive names: http(s)://, file:// or a folder "
                        f"(default: ${ENV_URL}, else the official address)")

    y = sub.add_parser("synth", help="render a synthetic training set from drawn signs, in GTSRB's layout "
                                      "(or road scenes in GTSDB's, with --scenes)")
    y.add_argument("out", metavar="OUT", help="folder to write OUT/Images/000NN/ (or the scenes) into (new or empty)")
    y.add_argument("--per-class", type=argparse_type(Option("--per-class", "", at_least(1)), int),
                   help="images per class, in tracks of up to 10 frames")
    y.add_argument("--seed", type=argparse_type(Option("--seed", "", at_least(0)), int), default=0,
                   help="the same seed writes the same files (default 0)")
    y.add_argument("--backgrounds", metavar="DIR", help="folder of scene photos to crop backgrounds from "
                   "(default: procedural sky, foliage, buildings, road)")
    y.add_argument("--classes", type=argparse_type(Option("--classes", "", each(between(0, 42))), int_list),
                   help="comma-separated class ids, e.g. 0,1,2 (default: all 43)")
    y.add_argument("--workers", type=argparse_type(Option("--workers", "", at_least(1)), int),
                   help="processes, one class each at a time (default: all cores; the files do not change)")
    y.add_argument("--pictograms", action="store_true", help="write the 43 drawn signs as PNGs to OUT instead")
    y.add_argument("--scenes", type=argparse_type(Option("--scenes", "", at_least(1)), int), metavar="N",
                   help="write N road scenes with drawn signs in GTSDB's layout instead (OUT/00000.jpg ..., "
                        "OUT/gt.txt), for detection")
    y.add_argument("--scene-size", metavar="WxH", type=argparse_type(Option(
        "--scene-size", "", lambda v: None if min(v) >= 32 else "each side must be at least 32"), size_pair),
        help="the scenes' width x height in px (default 1360x800, GTSDB's)")
    return parser


def given_train_fields(args: argparse.Namespace) -> dict:
    """The training fields set by flags, with augment.NAME and model_options.NAME nested into dicts."""
    given: dict = {}
    for dest, _, _ in train_options():
        value = getattr(args, dest, None)
        if value is None:
            continue
        head, _, name = dest.partition(".")
        if name:
            given.setdefault(head, {})[name] = value
        else:
            given[dest] = value
    return given


def cmd_train(args: argparse.Namespace) -> int:
    from signlab.api import train

    is_main = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 speaks
    train(**given_train_fields(args), log=print if is_main else (lambda _: None))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from signlab.api import evaluate
    from signlab.detection.detect import is_detection_run
    from signlab.detection.onnx_backend import is_detector_export
    from signlab.evaluation import format_summary

    if is_detection_run(args.target) or is_detector_export(args.target):
        from signlab.detection.evaluate import evaluate_detector, format_detection_summary

        budget = {} if args.fp_budget is None else {"fp_budget": args.fp_budget}
        summary = evaluate_detector(args.target, args.data, args.report, args.device or "auto",
                                    backend=args.backend, verify=args.verify, tta=bool(args.tta), **budget)
        print(json.dumps(summary) if args.json else format_detection_summary(summary))
        return 0
    if args.fp_budget is not None:
        raise UserError(f"{args.target}: --fp-budget is for detection runs; this is a classifier")
    summary = evaluate(args.target, args.data, report=args.report, device=args.device or "auto", tta=args.tta,
                       batch_size=args.batch_size or 256, backend=args.backend or "torch")
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from signlab.predict import load_model, predict_files
    from signlab.runtime import pick_device

    if (args.backend or "torch") == "onnx":
        from signlab.onnx_backend import load_onnx
        from signlab.onnx_backend import predict_files as predict_onnx

        model = load_onnx(args.target, args.device or "auto", args.batch_size or 256)
        results = predict_onnx(model, args.paths, args.top_k, tta=args.tta)
    else:
        device = pick_device(args.device or "auto")
        results = predict_files(load_model(args.target, device), args.paths, device, args.top_k,
                                args.batch_size or 256, tta=args.tta)
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


def cmd_detect(args: argparse.Namespace) -> int:
    from signlab.detection.cli import run_detect

    return run_detect(args)


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


def cmd_download(args: argparse.Namespace) -> int:
    from signlab.download import download

    download(args.dataset, args.to, args.url_base)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from signlab.synth.cli import run_synth

    return run_synth(args)


def cmd_export(args: argparse.Namespace) -> int:
    from signlab.detection.detect import is_detection_run
    from signlab.export import export_model

    if is_detection_run(args.target):
        from signlab.detection.export import export_detector

        written = export_detector(args.target, args.out, int8=args.int8)
    else:
        written = export_model(args.target, args.out, int8=args.int8)
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from signlab.serve import serve

    serve(args.target, host=args.host, port=args.port, device=args.device or "auto",
          backend=args.backend or "torch", batch_size=args.batch_size or 256,
          max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_concurrent=args.max_concurrent)
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from signlab.lab.cli import run_lab

    return run_lab(args)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # a bad flag (one line already printed), or --help
        return e.code if isinstance(e.code, int) else 2
    handler = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "detect": cmd_detect,
               "info": cmd_info, "lab": cmd_lab, "download": cmd_download, "synth": cmd_synth, "export": cmd_export,
               "serve": cmd_serve}[args.command]
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
