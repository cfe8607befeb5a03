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
from signlab.model_card import write_model_card
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
