"""The training configuration: one frozen dataclass, resolved once, that travels whole; saved as RUN/config.json.

Each field declares its flag, help and range (signlab.options), so the CLI, presets and saved configs are held
to the same rules. `resolve_train_config` is the one place that assembles a config: the preset, the flags, the
model's training defaults, the saved config on --resume and the default data, then checks the result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from signlab.augment import AugmentConfig
from signlab.contrast import CONTRAST_METHODS
from signlab.errors import UserError
from signlab.options import Option, above, at_least, between, each, int_list, one_of, option, validate
from signlab.runtime import BF16_MODES, DEVICES

PRESET_DIR = Path(__file__).parent / "presets"
# Fields that may differ on --resume without changing what is being trained. The device and thread count
# are free too, though bit-identical weights are only promised on the same machine and thread count.
RESUME_FREE_FIELDS = {"out", "resume", "overwrite", "device", "threads", "keep", "force_resume", "progress",
                      "max_bad_fraction", "max_image_pixels", "tta"}
NESTED_FIELDS = ("augment", "model_options")  # a flag inside these changes that key, not the whole dict
TASKS = ("auto", "classify", "detect")
DETECT_PRESET = "detect"  # a detection run without --preset starts from this one


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def check_model(name: str) -> str | None:
    from signlab.models import list_models

    return None if name in list_models() else f"unknown model; choose one of {', '.join(list_models())}"


def check_classifier(path: str) -> str | None:
    return None if Path(path).exists() else "no such run folder or weights file; train a classifier first"


def check_folder(path: str) -> str | None:
    return None if Path(path).is_dir() else "no such folder; give a GTSRB or class-per-folder dataset folder"


def check_paste_from(path: str) -> str | None:
    from signlab.detection.paste import DRAWN_SIGNS

    if path == DRAWN_SIGNS or Path(path).is_dir():
        return None
    return f"no such folder; give a GTSRB training folder (Images/000NN/GT-000NN.csv) or {DRAWN_SIGNS}"


@dataclass(frozen=True)
class TrainConfig:
    # data
    data: str | None = option(None, "--data", "dataset folder (default: signlab's own drawn signs, rendered once)",
                              check_folder)
    val_data: str | None = option(None, "--val-data", "validate on this folder instead of a split of --data "
                                  "(default without --data: the drawn signs' held-out set)", check_folder)
    val_fraction: float = option(0.1, "--val-fraction", "share of tracks held out for validation (default 0.1)",
                                 between(0, 1, high_open=True))
    split_seed: int = option(0, "--split-seed", "seed of the validation split, apart from --seed (default 0)",
                             at_least(0))
    image_size: int = option(32, "--image-size", "input side in pixels (default 32)", between(8, 512))
    crop: str = option("roi", "--crop", "roi (crop the annotated sign) or full (whole frame)", one_of("roi", "full"))
    contrast: str = option("equalize", "--contrast", "none or equalize (histogram equalisation of each image's "
                           "luminance; default)", one_of(*CONTRAST_METHODS))
    max_bad_fraction: float = option(0.01, "--max-bad-fraction", "stop if more of the images are unusable "
                                     "(default 0.01)", between(0, 1))
    max_image_pixels: int = option(40_000_000, "--max-image-pixels", "refuse larger images as decompression bombs",
                                   at_least(1))
    task: str = option("auto", "--task", "classify (sign crops), detect (signs in whole scenes) or auto (detect when "
                       "--data is in GTSDB's layout; default)", one_of(*TASKS))
    classifier: str | None = option(None, "--classifier", "detect: the GTSRB classifier (run folder or weights "
                                    "file) that names the signs found; copied into the run", check_classifier)
    paste: float = option(0.0, "--paste", "detect: probability that a training crop gets 1-3 more signs pasted in "
                          "(copy-paste augmentation; 0 = off, default)", between(0, 1))
    paste_from: str | None = option(None, "--paste-from", "detect: paste GTSRB's signs from this training folder "
                                    "(Images/000NN/GT-000NN.csv), or `drawn`: signlab's drawn signs (default: the "
                                    "classifier's training folder where it is still there, else drawn)",
                                    check_paste_from)
    mine: float = option(0.0, "--mine", "detect: share of crops centred on the finder's own false positives, mined "
                         "from its training scenes from a third of the epochs on (0 = off, default)", between(0, 1))
    val_every: int = option(1, "--val-every", "detect: validate, and choose the best weights, every N epochs and "
                            "at the last (default 1; a validation pass costs about 4 s on 2 cores)", at_least(1))
    verify: bool = option(False, "--verify", "detect: after training, train a sign/not-sign verifier on the "
                          "finder's false positives in its training scenes; detection multiplies its score in "
                          "(detect_fast: on; --no-verify: off)", negatable=True)
    # model
    model: str = option("signnet", "--model", "model name (default signnet)", check_model)
    model_options: dict = option(None, None, "passed to the model factory", default_factory=dict)
    init: str = option("default", "--init", "default (PyTorch's He-style) or normal (the lecture's N(0, 0.1))",
                       one_of("default", "normal"))
    # optimisation
    epochs: int = option(10, "--epochs", "epochs to train (default 10)", at_least(1))
    batch_size: int = option(128, "--batch-size", "images per step, over all processes (default 128)", at_least(1))
    optimizer: str = option("sgd", "--optimizer", "sgd (Nesterov momentum) or adamw", one_of("sgd", "adamw"))
    lr: float = option(0.1, "--lr", "peak learning rate of the one-cycle schedule (default 0.1)", above(0))
    momentum: float = option(0.9, "--momentum", "SGD momentum (default 0.9)", between(0, 1, high_open=True))
    weight_decay: float = option(5e-4, "--weight-decay", "on weights only; BN and biases are not decayed",
                                 between(0, 1))
    warmup: float = option(0.2, "--warmup", "share of the steps spent rising to the peak learning rate",
                           between(0, 1))
    label_smoothing: float = option(0.1, "--label-smoothing", "label smoothing of cross-entropy (default 0.1)",
                                    between(0, 1, high_open=True))
    loss: str = option("cross_entropy", "--loss", "cross_entropy or squared (the lecture's squared error on "
                       "sigmoid outputs)", one_of("cross_entropy", "squared"))
    ema: float = option(0.0, "--ema", "EMA decay of the weights per step (0 = off)", between(0, 1, high_open=True))
    augment: AugmentConfig = option(None, None, "training augmentation", default_factory=AugmentConfig)
    tta: bool = option(False, "--tta", "evaluate and predict apply test-time augmentation to this model by default")
    flips: float = option(0.0, "--flips", "probability of a class-aware flip, GTSRB classes only (0 = off)",
                          between(0, 1))
    # machine
    bf16: str = option("auto", "--bf16", "bf16 autocast: auto (where the hardware has bf16 arithmetic), on "
                       "(emulated, slow, elsewhere) or off", one_of(*BF16_MODES))
    channels_last: bool = option(True, "--no-channels-last", "keep NCHW memory layout")
    compile: bool = option(False, "--compile", "torch.compile the model (the first step compiles: ~45 s on a CPU)")
    sync_bn: bool = option(False, "--sync-bn", "under torchrun: BatchNorm statistics over the global batch")
    device: str = option("auto", "--device", "auto, cpu or cuda", one_of(*DEVICES))
    threads: int = option(0, "--threads", "CPU threads (default 0: OMP_NUM_THREADS, else the cores allowed)",
                          at_least(0))
    seed: int = option(0, "--seed", "seed of the initialisation, data order and augmentation", at_least(0))
    # run folder
    out: str = option("runs/latest", "--out", "run folder (default runs/latest)")
    resume: bool = option(False, "--resume", "continue from the newest good checkpoint in --out")
    overwrite: bool = option(False, "--overwrite", "start again in a run folder that already holds a run")
    force_resume: bool = option(False, "--force-resume", "resume even if flags change the saved config")
    keep: int = option(3, "--keep", "epoch checkpoints kept besides the best (default 3)", at_least(1))
    progress: bool = option(True, "--no-progress", "no progress bar")
    preset: str | None = option(None, "--preset", f"named config ({', '.join(preset_names())}) or a .json file; "
                                "flags override it")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"config: unknown field(s) {', '.join(unknown)}; remove them")
        d = dict(d)
        if isinstance(d.get("augment"), dict):
            known_aug = {f.name for f in fields(AugmentConfig)}
            unknown_aug = sorted(set(d["augment"]) - known_aug)
            if unknown_aug:
                raise UserError(f"config: unknown augment field(s) {', '.join(unknown_aug)}; "
                                f"use {', '.join(sorted(known_aug))}")
            d["augment"] = AugmentConfig(**d["augment"])
        return cls(**d)

    @staticmethod
    def with_legacy_defaults(saved: dict) -> dict:
        """A config saved before a field existed meant that field's old behaviour, not today's default: weights
        trained on raw pixels must be evaluated on raw pixels; one --seed drew the validation split too; every
        run was a classifier's."""
        saved = {"contrast": "none", "split_seed": saved.get("seed", 0), "task": "classify", **saved}
        if isinstance(saved.get("bf16"), bool):  # bf16 was a bool meaning "where the hardware has it"
            saved["bf16"] = "auto" if saved["bf16"] else "off"
        return saved

    def save(self, path: Path) -> None:
        """Atomically: a kill mid-write must not leave a half file that breaks --resume."""
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)


# Options of the model factories, set with flags and kept in TrainConfig.model_options.
MODEL_OPTIONS = {
    "hidden": Option("--hidden", "mlp: hidden units", at_least(1), int),
    "activation": Option("--activation", "mlp: sigmoid, tanh or relu", one_of("sigmoid", "tanh", "relu"), str),
    "widths": Option("--widths", "signnet: channels per stage, e.g. 16,32,64", each(at_least(1)), int_list),
    "depth": Option("--depth", "signnet: 3x3 convs per stage, e.g. 2,2,2 (one count: every stage)",
                    each(at_least(1)), int_list),
}


def load_preset(name: str) -> dict:
    """A preset is a JSON file of TrainConfig fields shipped in signlab/presets/ (or any path)."""
    path = Path(name) if name.endswith(".json") else PRESET_DIR / f"{name}.json"
    if not path.is_file():
        raise UserError(f"--preset {name}: no such preset; choose one of {', '.join(preset_names())} "
                        f"or give a .json file")
    try:
        preset = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e}); fix the file") from None
    if not isinstance(preset, dict):
        raise UserError(f"{path}: a preset is a JSON object of config fields; fix the file")
    preset.pop("_comment", None)
    return preset


def config_differences(saved: dict, current: dict) -> list[str]:
    """Fields, other than those free to change on resume, whose values differ: 'name: saved -> current'."""
    keys = (set(saved) | set(current)) - RESUME_FREE_FIELDS
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in sorted(keys) if saved.get(k) != current.get(k)]


def merge(base: dict, changes: dict) -> dict:
    """`changes` over `base`; nested config dicts (augment, model_options) are merged key by key."""
    merged = dict(base)
    for k, v in changes.items():
        nested = k in NESTED_FIELDS and isinstance(v, dict) and isinstance(base.get(k), dict)
        merged[k] = {**base[k], **v} if nested else v
    return merged


def check_model_options(cfg: TrainConfig, where: str) -> None:
    """Every model option in range, and the model buildable at this image size, before any data is read."""
    for key, value in cfg.model_options.items():
        opt = MODEL_OPTIONS.get(key)
        complaint = opt.check(value) if opt and opt.check else None
        if complaint:
            raise UserError(f"{opt.flag} {value}: {complaint}{where}")
    from signlab.models import count_macs, create_model

    model = create_model(cfg.model, image_size=cfg.image_size, init=cfg.init, **cfg.model_options)
    try:
        count_macs(model, cfg.image_size)
    except RuntimeError as e:
        raise UserError(f"--image-size {cfg.image_size}: model {cfg.model} cannot take it "
                        f"({str(e).splitlines()[0]}); choose another size") from None


def resolve_train_config(given: dict, log: Callable[[str], object] = print) -> TrainConfig:
    """The one place a training config is assembled, from `given`: the fields the user set by flag (nested dicts
    for augment and model_options) and "preset". Order: preset, flags; on --resume the run's saved config is the
    base and changes to it need --force-resume; else the model's training defaults fill what is still unset and
    no data means signlab's drawn-sign default set (signlab.synth.default). The result is checked before any
    work starts."""
    given = with_task(given)
    preset = given.get("preset")
    fields_set = load_preset(preset) if preset else {}
    if "model" in given and given["model"] != fields_set.get("model", given["model"]):
        fields_set.pop("model_options", None)  # a preset's model options belong to the preset's model
    fields_set = merge(fields_set, given)
    from signlab.detection.paste import DRAWN_SIGNS

    # absolute, so that a resume from another folder finds the same data
    for key in ("data", "val_data", "classifier", "paste_from"):
        if fields_set.get(key) and (key, fields_set[key]) != ("paste_from", DRAWN_SIGNS):
            fields_set[key] = str(Path(fields_set[key]).resolve())
    where = f" (from --preset {preset})" if preset else ""
    saved_path = Path(fields_set.get("out", TrainConfig.out)) / "config.json"
    if fields_set.get("resume") and saved_path.is_file():
        saved = TrainConfig.with_legacy_defaults(json.loads(saved_path.read_text()))
        merged = {**merge(saved, fields_set), "resume": True}
        diffs = config_differences(saved, merged)
        if diffs and not merged.get("force_resume"):
            raise UserError(f"--resume: the config differs from {saved_path} in {'; '.join(diffs)}; "
                            f"drop those flags or pass --force-resume to override")
        for d in diffs:
            log(f"resume: overriding {d}")
        fields_set, where = merged, f" (in {saved_path})"
    else:
        from signlab.models import train_defaults

        if fields_set.get("task", "auto") == "auto":
            fields_set["task"] = "classify"
        for key, value in train_defaults(fields_set.get("model", TrainConfig.model)).items():
            fields_set.setdefault(key, value)
        fields_set = with_paste_source(fields_set, log)
    cfg = TrainConfig.from_dict(fields_set)
    validate(cfg, where)
    check_task(cfg, where)
    check_model_options(cfg, where)
    return cfg


def with_task(given: dict) -> dict:
    """--task auto becomes detect when --data is a GTSDB scene folder (gt.txt beside the scenes); a detection
    run without --preset takes the detect preset's settings. Left auto, the preset, the saved config on
    --resume, or else "classify" decides."""
    task = given.get("task", "auto")
    data = given.get("data")
    if task == "auto" and data and is_scene_folder(Path(data)):
        task = "detect"
    if task == "auto":
        return given
    given = {**given, "task": task}
    if task == "detect" and not given.get("preset") and not given.get("resume"):
        given["preset"] = DETECT_PRESET
    return given


def with_paste_source(fields: dict, log: Callable[[str], object]) -> dict:
    """A detection run that pastes signs (--paste) without --paste-from takes them from the GTSRB training folder
    its classifier learned from, where that folder is still there: real signs, which docs/detection.md measured;
    else paste_from stays unset and the drawn signs are pasted. Recorded in the config, so a resume agrees."""
    if fields.get("task") != "detect" or not fields.get("paste") or fields.get("paste_from"):
        return fields
    from signlab.checkpoint import load_weights
    from signlab.layouts import detect_layout

    try:
        trained_on = load_weights(fields["classifier"])[1].get("config", {}).get("data")
        if trained_on and detect_layout(Path(trained_on))[0] == "gtsrb-train":
            log(f"paste: signs from {trained_on}, the classifier's training folder (--paste-from overrides)")
            return {**fields, "paste_from": trained_on}
    except (KeyError, UserError, OSError):  # no classifier given or readable: check_task and training say so
        pass
    return fields


def is_scene_folder(path: Path) -> bool:
    from signlab.detection.scenes import is_gtsdb_layout

    return is_gtsdb_layout(path)


def check_task(cfg: TrainConfig, where: str) -> None:
    """The model must do the run's task; a detection run needs the classifier that will name its signs."""
    from signlab.models import list_models, model_task

    task = "classify" if cfg.task == "auto" else cfg.task
    if model_task(cfg.model) != task:
        raise UserError(f"--model {cfg.model}: a {model_task(cfg.model)} model, but this is a {task} run; choose "
                        f"one of {', '.join(list_models(task))}{where}")
    if task == "classify" and (cfg.paste > 0 or cfg.paste_from):
        raise UserError(f"--paste{'-from' if cfg.paste_from else ''}: pastes signs into detection scenes; a classify "
                        f"run takes no such flag; drop it{where}")
    if task == "classify" and cfg.verify:
        raise UserError(f"--verify: verifies a detector's proposals; a classify run takes no such flag; "
                        f"drop it{where}")
    if task == "classify" and cfg.val_every != 1:
        raise UserError(f"--val-every: a classify run validates every epoch (it costs a second); drop it{where}")
    if task == "classify" and cfg.mine > 0:
        raise UserError(f"--mine: mines false positives in detection scenes; a classify run takes no such flag; "
                        f"drop it{where}")
    if task == "detect" and cfg.paste_from and cfg.paste == 0:
        raise UserError(f"--paste-from {cfg.paste_from}: pastes nothing at --paste 0; give --paste P too, e.g. "
                        f"--paste 0.5{where}")
    if task == "detect" and not cfg.data:
        raise UserError("--data: a detection run trains on a GTSDB scene folder (scenes and gt.txt); pass "
                        "--data GTSDB_DIR")
    if task == "detect" and not cfg.classifier:
        raise UserError("--classifier: a detection run needs a GTSRB classifier to name the signs it finds; train "
                        "one first (signlab train --preset fast --out runs/classifier), then pass "
                        "--classifier runs/classifier")
