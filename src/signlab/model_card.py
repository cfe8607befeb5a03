"""The model card that `signlab export` writes beside an exported model: data, training recipe, the run's
saved figures, known failure modes and how to run the file with onnxruntime alone."""

from __future__ import annotations

import json
from pathlib import Path

from signlab.errors import UserError
from signlab.predict import LoadedModel

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
        # A detection run holds a copy of its classifier: bench/runtimes.py needs the classifier's own run.
        in_detector = (_json_file(run / "config.json") or {}).get("task") == "detect"
        how = ("run `python bench/runtimes.py CLASSIFIER_RUN` on the classifier's own run folder" if in_detector
               else f"`python bench/runtimes.py {run}`")
        validation.append(f"- int8 model: same top-1 class as fp32 on {figures['int8_agreement']:.2%} of its "
                          f"calibration images; its validation accuracy: {how}")
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
