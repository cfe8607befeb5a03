"""`signlab export`: a trained model as an ONNX file that any onnxruntime can run, an int8 copy of it, and a
model card beside them.

The graph takes what `Preprocessing.decode` gives: `images`, uint8 (N, S, S, 3) RGB, already cropped to the
sign and resized to S×S (resizing stays outside: every image library does it, and an ONNX Resize would not
match PIL's). Everything after that is inside the graph, so a deployment needs no signlab:
contrast normalisation (`equalize`: the luminance histogram equalisation of signlab.contrast, op for op),
the standardisation by the training split's mean and std, and the model. The output is `logits` (N, classes).
The class names, the preprocessing and the run's config travel in the file's metadata (keys `signlab.*`).

The exporter is torch's `torch.export`-based one (`dynamo=True`): in torch 2.13 the TorchScript exporter is
deprecated ("will be removed") and cannot export the spatial transformer's affine_grid below opset 20.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from signlab.errors import UserError
from signlab.predict import LoadedModel, load_model

INPUT, OUTPUT = "images", "logits"
OPSET = 20  # GridSample (the spatial transformer) needs 16+; 20 is what torch 2.13 exports by default
META = "signlab."  # prefix of the metadata keys
IN_GRAPH = "contrast,standardisation"  # the preprocessing steps the graph applies itself (metadata in_graph)
PARITY_TOLERANCE = 1e-4  # max |logit difference| vs torch fp32 accepted right after export
CALIBRATION_IMAGES = 512
_LUMA = (0.299, 0.587, 0.114)  # as signlab.contrast (ITU-R BT.601)


class LuminanceEqualizer(nn.Module):
    """signlab.contrast.equalize_luminance as torch ops that export to ONNX: uint8 (N, H, W, 3) -> float
    (N, H, W, 3) holding the same integer values 0..255.

    Bit-exact with the NumPy version only if each step rounds as it does: both compute the luminance as a
    chain of fused multiply-adds, each step in float64 (exact for 8-bit pixels times 24-bit weights) rounded
    to float32 once (signlab.contrast.luminance). A pixel whose luminance is an exact tie (x.5) otherwise
    rounds the other way. On GTSRB's 39,209 training images the graph's output equals NumPy's in every pixel
    (onnxruntime 1.32).
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = images.shape
        rgb, wide = images.float(), images.double()
        weights = [float(np.float32(v)) for v in _LUMA]
        luma = (wide[..., 0] * weights[0]).float()
        luma = (wide[..., 1] * weights[1] + luma.double()).float()
        luma = (wide[..., 2] * weights[2] + luma.double()).float()  # (N, H, W)
        levels = torch.round(luma).clamp(0, 255).long().reshape(n, h * w)
        counts = torch.zeros(n, 256).scatter_add(1, levels, torch.ones(n, h * w))  # histogram per image
        cdf = counts.cumsum(1)
        cdf_min = torch.where(counts > 0, cdf, torch.full_like(cdf, float("inf"))).amin(1, keepdim=True)
        span = (h * w - cdf_min).clamp_min(1)
        mapping = ((cdf - cdf_min) / span * 255).clamp(0, 255)  # (N, 256)
        identity = torch.arange(256, dtype=torch.float32).expand(n, 256)
        mapping = torch.where(cdf_min == h * w, identity, mapping)  # one grey level: keep the image
        gain = mapping.gather(1, levels).reshape(n, h, w) / luma.clamp_min(1.0)
        return (rgb * gain[..., None] + 0.5).clamp(0, 255).floor()  # floor = NumPy's astype(uint8) here


class Deployable(nn.Module):
    """The exported graph: uint8 NHWC images -> contrast -> standardisation -> the model's logits, computed
    in the order Preprocessing.to_tensor computes them."""

    def __init__(self, model: nn.Module, pre) -> None:
        super().__init__()
        self.model = model
        self.equalize = LuminanceEqualizer() if pre.contrast == "equalize" else None
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.equalize(images) if self.equalize is not None else images.float()  # (N, S, S, 3), 0..255
        x = x.permute(0, 3, 1, 2) / 255.0
        return self.model((x - self.mean) / self.std)


def export_model(target: str | Path, out: str | Path | None = None, int8: bool = False,
                 card: str = "MODEL_CARD.md") -> list[Path]:
    """Write the ONNX model of a run folder or weights file (default RUN/model.onnx), with --int8 also
    model.int8.onnx, and the model card (`card`) beside them; check each file with onnxruntime. Returns the
    paths."""
    from signlab.onnx_backend import require

    require("onnx", "onnxruntime", "onnxscript")
    loaded = load_model(target, torch.device("cpu"))
    out = _out_path(loaded, out)
    train_images, data_note = training_images(loaded, needed=int8)
    check = train_images if train_images is not None else drawn_signs(loaded.preprocessing.image_size)
    proto = to_onnx(loaded)
    set_metadata(proto, loaded)
    diff = save_checked(proto, out, lambda written: verify(written, loaded, check))
    written, figures = [out], {"parity": diff, "parity_images": len(check), "parity_source": data_note}
    if int8:
        int8_path = out.with_name(out.name[:-len(".onnx")] + ".int8.onnx")
        figures["int8_agreement"] = quantize_int8(out, int8_path, train_images)
        written.append(int8_path)
    written.append(write_model_card(loaded, written, figures, card))
    return written


def _out_path(loaded: LoadedModel, out: str | Path | None) -> Path:
    path = Path(out) if out else loaded.path.parent / "model.onnx"
    if path.suffix.lower() != ".onnx":
        raise UserError(f"--out {path}: an ONNX file name must end in .onnx")
    if path.is_dir():
        raise UserError(f"--out {path}: is a folder; give a file name such as {path / 'model.onnx'}")
    return path


def to_onnx(loaded: LoadedModel):
    """The Deployable graph as an onnx.ModelProto with a dynamic batch dimension."""
    size = loaded.preprocessing.image_size
    wrapper = Deployable(loaded.model.to(memory_format=torch.contiguous_format), loaded.preprocessing).eval()
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)  # 2, not 1: a batch of 1 would be specialised
    return graph_to_onnx(wrapper, example, INPUT, OUTPUT, {0: torch.export.Dim("batch")},
                         f"{loaded.path}: model {loaded.config.model}")


def graph_to_onnx(module: nn.Module, example: torch.Tensor, input_name: str, output_name: str,
                  dynamic: dict, what: str):
    """One-input, one-output `module` as an onnx.ModelProto (torch.export, OPSET), the dimensions of `dynamic`
    ({axis: Dim}) left free. A module that cannot be exported is a UserError naming `what`."""
    noisy = logging.getLogger("torch.onnx")
    level = noisy.level
    try:
        noisy.setLevel(logging.ERROR)  # "torchvision is not installed" and progress lines are not ours to fix
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=OPSET, verbose=False,
                                        input_names=[input_name], output_names=[output_name],
                                        dynamic_shapes={input_name: dynamic})
    except Exception as e:  # the exporter raises many kinds; the user needs the model's name and the first line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{what} cannot be exported to ONNX ({first}); use it with --backend torch") from None
    finally:
        noisy.setLevel(level)
    return program.model_proto


def metadata(loaded: LoadedModel) -> dict[str, str]:
    import signlab

    return {f"{META}class_names": json.dumps(loaded.class_names),
            f"{META}preprocessing": json.dumps(loaded.preprocessing.to_dict()),
            f"{META}in_graph": IN_GRAPH,
            f"{META}input": f"{INPUT}: uint8 (N, {loaded.preprocessing.image_size}, "
                            f"{loaded.preprocessing.image_size}, 3) RGB, cropped and resized outside the graph",
            f"{META}version": signlab.__version__,
            f"{META}weights": loaded.path.name,
            f"{META}config": json.dumps(loaded.config.to_dict())}


def set_metadata(proto, loaded: LoadedModel) -> None:
    import onnx

    proto.doc_string = f"signlab {loaded.config.model}: traffic-sign classifier; see the signlab.* metadata"
    onnx.helper.set_model_props(proto, metadata(loaded))


def save_checked(proto, path: Path, check) -> float:
    """Write atomically (a reader sees the old file or the new one) once onnx's checker and `check(file)`
    have passed it; returns what `check` returns."""
    import onnx

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
        result = check(tmp)
        os.replace(tmp, path)
        return result
    except OSError as e:
        raise UserError(f"{path}: cannot write the ONNX file ({e.strerror or e}); choose another --out") from None
    finally:
        tmp.unlink(missing_ok=True)


@torch.no_grad()
def torch_logits(loaded: LoadedModel, images: np.ndarray) -> np.ndarray:
    """The reference: the run's preprocessing and model in fp32 (no bf16 autocast, no TTA)."""
    pre = loaded.preprocessing
    x = pre.to_tensor(pre.normalize(images), torch.device("cpu"))
    return loaded.model.eval()(x).float().numpy()


def verify(path: Path, loaded: LoadedModel, images: np.ndarray) -> float:
    """max |logit difference| between onnxruntime on `path` and torch fp32; an error above PARITY_TOLERANCE
    (relative to the largest logit, when that is above 1)."""
    from signlab.onnx_backend import OnnxClassifier

    got = OnnxClassifier(path, device="cpu").logits(images)
    want = torch_logits(loaded, images)
    diff = float(np.abs(got - want).max()) if len(images) else 0.0
    if diff > PARITY_TOLERANCE * max(1.0, float(np.abs(want).max())):
        raise RuntimeError(f"{path}: onnxruntime's logits differ from torch's by {diff:.2e} on {len(images)} "
                           f"images; the export is wrong, please report it")
    return diff


def training_images(loaded: LoadedModel, needed: bool) -> tuple[np.ndarray | None, str]:
    """Up to CALIBRATION_IMAGES decoded images of the run's training split (seeded choice) and where they
    came from; (None, reason) when the run's data is not there and not `needed`."""
    from signlab.data import data_folders, split_indices

    cfg, pre = loaded.config, loaded.preprocessing
    train_folder, val_folder = data_folders(cfg.data, cfg.val_data)
    if not Path(train_folder).is_dir():
        if needed:
            raise UserError(f"--int8: calibration needs the run's training images, but {train_folder} (config "
                            f"field data) is not there; put the data back or export without --int8")
        return None, f"drawn signs ({train_folder} is not there)"
    full = pre.load(train_folder, cfg.max_bad_fraction)
    idx = np.arange(len(full)) if val_folder else split_indices(full, cfg.val_fraction, cfg.split_seed)[0]
    chosen = np.sort(np.random.default_rng(0).permutation(idx)[:CALIBRATION_IMAGES])
    return full.images[chosen], f"training images of {train_folder}"


def drawn_signs(size: int) -> np.ndarray:
    """The 43 drawn signs on mid-grey noise at `size`×`size`: real-looking inputs that need no dataset."""
    from PIL import Image

    from signlab.synth.pictograms import NUM_CLASSES, draw_sign

    rng = np.random.default_rng(0)
    out = []
    for c in range(NUM_CLASSES):
        background = Image.fromarray(rng.integers(60, 190, (size, size, 3), dtype=np.uint8)).convert("RGBA")
        background.alpha_composite(draw_sign(c, size))
        out.append(np.asarray(background.convert("RGB")))
    return np.stack(out)


# ---------------------------------------------------------------- int8


def quantize_int8(fp32: Path, out: Path, images: np.ndarray) -> float:
    """onnxruntime static quantisation of `fp32` to `out`: QDQ, int8 weights per output channel, int8
    activations, ranges calibrated (min/max) on `images`. Only Conv, Gemm and MatMul are quantised: the
    preprocessing ops stay float, so the contrast step stays exact. No quant_pre_process: its symbolic shape
    inference fails on the equaliser's graph, and without it the fast run's int8 model is within 0.03 point of
    fp32 (docs/deploy.md). reduce_range: with full 8-bit weights the fast run lost 2 points on an AVX2-only CPU,
    where onnxruntime's u8s8 kernels saturate; with it, none (docs/deploy.md). Returns the int8 model's
    agreement with fp32's top-1 class on `images`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(np.array_split(images, max(1, len(images) // 64)))

        def get_next(self) -> dict | None:
            return next(({INPUT: b} for b in self._batches), None)

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    root, level = logging.getLogger(), logging.getLogger().level
    try:
        root.setLevel(logging.ERROR)  # onnxruntime logs its advice to run quant_pre_process (see above) there
        quantize_static(str(fp32), str(tmp), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "Gemm", "MatMul"],
                        reduce_range=True)  # 7-bit weights: u8s8 kernels saturate on CPUs without VNNI
        os.replace(tmp, out)
    except OSError as e:
        raise UserError(f"{out}: cannot write the int8 model ({e.strerror or e}); choose another --out") from None
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)
    from signlab.onnx_backend import OnnxClassifier

    a = OnnxClassifier(fp32, device="cpu").logits(images).argmax(1)
    b = OnnxClassifier(out, device="cpu").logits(images).argmax(1)
    return float((a == b).mean())


# ---------------------------------------------------------------- model card

GENERAL_FAILURES = (
    "It has no \"not a sign\" answer: any image, sign or not, gets one of its classes, often with high "
    "probability. Use it on crops that a detector or a person has already found to be signs.",
    "It expects the sign to fill the crop as GTSRB's ROI boxes frame it; loose or cut-off crops cost accuracy "
    "(docs/robustness.md measures how much).",
    "GTSRB's errors sit in speed limits confused with one another, in dark, blurred or motion-smeared shots and "
    "in signs partly hidden; German signs only: other countries' versions of a sign are out of domain.",
)


def _json_file(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _evaluations(run: Path) -> list[tuple[str, dict]]:
    """The `signlab evaluate --json` outputs saved in the run folder (RUN/eval*.json)."""
    found = [(p.name, _json_file(p)) for p in sorted(run.glob("eval*.json"))]
    return [(name, d) for name, d in found if isinstance(d, dict) and "accuracy" in d and "source" in d]


def _sorted_evaluations(loaded: LoadedModel) -> tuple[list[str], list[str], list[dict]]:
    """The run's saved evaluations as lines: on its own data (validation split, training folder), on other
    data (cross-domain); and the held-out ones' summaries, each with its file name."""
    cfg = loaded.config
    own, cross, held = [], [], []
    for name, d in _evaluations(loaded.path.parent):
        source = str(d["source"])
        line = (f"- `{name}`: accuracy {d['accuracy']:.4f} ({d.get('correct')}/{d.get('n')}) on {source}"
                f"{', with TTA' if d.get('tta') else ', no TTA'}")
        if source.startswith("validation split") or source == str(cfg.val_data):
            own.append(line)
            held.append({"file": name, **d})
        elif source == str(cfg.data):
            own.append(line + " (the training folder itself: not a held-out figure)")
        else:
            cross.append(line)
    return own, cross, held


def _failure_lines(held: list[dict]) -> list[str]:
    """The weakest classes and most confused pairs of the largest held-out evaluation, then general ones."""
    failures = []
    measured = max(held, key=lambda d: d.get("n", 0), default=None)
    if measured and measured.get("per_class"):
        rated = sorted((v["accuracy"], v["name"], v["n"]) for v in measured["per_class"].values()
                       if v.get("accuracy") is not None)
        failures.append(f"Measured on this run's validation split (`{measured['file']}`): weakest classes "
                        + "; ".join(f"{name} {acc:.3f} (n={n})" for acc, name, n in rated[:5]) + ".")
        pairs = measured.get("most_confused") or []
        if pairs:
            failures.append("Most confused (true -> predicted: count): " + "; ".join(
                f"{p['true_name']} -> {p['predicted_name']}: {p['count']}" for p in pairs[:5]) + ".")
    failures += [f"Known in general, not measured on this run: {text}" for text in GENERAL_FAILURES]
    return [f"- {f}" for f in failures]


def _figure_lines(loaded: LoadedModel, figures: dict) -> tuple[list[str], list[str], list[str]]:
    """Lines of the validation, cross-domain and failure-mode sections, from the run folder's files."""
    run = loaded.path.parent
    best, validation = _json_file(run / "best.json"), []
    if best and "val_accuracy" in best:
        validation.append(f"- during training (torch, no TTA; {run / 'best.json'}): validation accuracy "
                          f"{best['val_accuracy']:.4f}, loss {best.get('val_loss', float('nan')):.4f}, "
                          f"epoch {best.get('epoch')} (every epoch: {run / 'metrics.csv'})")
    own, cross, held = _sorted_evaluations(loaded)
    validation += own or ["- no `signlab evaluate` result saved in the run folder"]
    validation.append("- the exported graph is the plain forward pass, without test-time augmentation: compare it "
                      "with the figures without TTA")
    validation.append(f"- export check: max |logit difference| onnxruntime vs torch fp32 = {figures['parity']:.2e} "
                      f"on {figures['parity_images']} images ({figures['parity_source']})")
    if "int8_agreement" in figures:
        validation.append(f"- int8 model: same top-1 class as fp32 on {figures['int8_agreement']:.2%} of its "
                          f"calibration images; its validation accuracy: `python bench/runtimes.py {run}`")
    crossing = cross or [
        "None measured. Evaluate on another dataset and keep the result beside the model, e.g. "
        f"`signlab evaluate {run} --data DIR --json > {run}/eval-DOMAIN.json`, then export again."]
    return validation, crossing, _failure_lines(held)


def write_model_card(loaded: LoadedModel, written: list[Path], figures: dict, card: str = "MODEL_CARD.md") -> Path:
    """The model card (MODEL_CARD.md unless told) beside the exported files: data, training recipe, figures,
    failure modes, usage."""
    cfg, pre, run = loaded.config, loaded.preprocessing, loaded.path.parent
    split = _json_file(run / "split.json") or {}
    counts = (f"{split['train_images']} training and {split['val_images']} validation images"
              if "train_images" in split else "image counts not recorded (no split.json)")
    validation, crossing, failures = _figure_lines(loaded, figures)
    recipe = {k: getattr(cfg, k) for k in ("preset", "model", "model_options", "epochs", "batch_size", "optimizer",
                                           "lr", "momentum", "weight_decay", "warmup", "label_smoothing", "loss",
                                           "ema", "tta", "bf16", "seed")}
    onnx_name = written[0].name
    text = "\n".join([
        f"# Model card: {cfg.model} from {run}", "",
        "Files: " + ", ".join(f"`{p.name}`" for p in written) + f"; exported from `{loaded.path}`.", "",
        "## Data", "",
        f"- training data: {cfg.data or 'signlab drawn-sign default set'}; validation: "
        + (cfg.val_data or f"{cfg.val_fraction:.0%} of it by whole tracks (split seed {cfg.split_seed})"),
        f"- {counts}; {len(loaded.class_names)} classes",
        f"- preprocessing: {pre.crop} crop, bilinear resize to {pre.image_size}x{pre.image_size} (outside the "
        f"graph), contrast {pre.contrast} and standardisation by mean {[round(m, 4) for m in pre.mean]}, "
        f"std {[round(s, 4) for s in pre.std]} (inside the graph)", "",
        "## Training recipe", "",
        *[f"- {k}: {'none' if v is None else v}" for k, v in recipe.items()], f"- augment: {cfg.augment.__dict__}", "",
        "## Validation figures", "", *validation, "",
        "## Cross-domain figures", "", *crossing, "",
        "## Known failure modes", "", *failures, "",
        "## How to use", "",
        f"`signlab predict {run} sign.png --backend onnx`, or with onnxruntime alone:", "",
        "```python", "import json", "", "import numpy as np", "import onnxruntime as ort", "from PIL import Image",
        "", f'session = ort.InferenceSession("{onnx_name}")',
        "meta = session.get_modelmeta().custom_metadata_map",
        'names = json.loads(meta["signlab.class_names"])',
        'size = json.loads(meta["signlab.preprocessing"])["image_size"]',
        "crop = Image.open(\"sign.png\").convert(\"RGB\")  # the sign, cropped as GTSRB's ROI frames it",
        "image = np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None))",
        'logits = session.run(["logits"], {"images": image[None]})[0]  # (1, classes); batches of any size',
        "print(names[int(logits.argmax())])", "```", ""])
    path = written[0].parent / card
    try:
        path.write_text(text)
    except OSError as e:
        raise UserError(f"{path}: cannot write the model card ({e.strerror or e}); choose another --out") from None
    return path
