"""The training configuration: one dataclass that travels whole, saved as RUN/config.json."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from signlab.augment import AugmentConfig
from signlab.errors import UserError

PRESET_DIR = Path(__file__).parent / "presets"
# Fields that may differ on --resume without changing what is being trained. The device and thread count
# are free too, though bit-identical weights are only promised on the same machine and thread count.
RESUME_FREE_FIELDS = {"out", "resume", "overwrite", "device", "threads", "keep", "force_resume", "progress",
                      "max_bad_fraction", "max_image_pixels", "tta"}

# Fields whose default changed, with the value that configs saved before they existed meant.
LEGACY_DEFAULTS = {"contrast": "none"}


@dataclass
class TrainConfig:
    # data
    data: str | None = None  # dataset folder; None = the shipped sample's training part
    val_data: str | None = None  # validate on this folder instead of a split of `data`
    val_fraction: float = 0.1  # share of tracks held out for validation
    image_size: int = 32  # pixels, square
    crop: str = "roi"  # roi: crop the annotated sign; full: the whole frame
    contrast: str = "equalize"  # none or equalize: per-image histogram equalisation of the luminance
    max_bad_fraction: float = 0.01  # stop before training if more of the images are unusable
    max_image_pixels: int = 40_000_000  # larger images are refused as decompression bombs
    # model
    model: str = "signnet"
    model_options: dict = field(default_factory=dict)  # passed to the model factory (e.g. hidden, widths)
    init: str = "default"  # default (PyTorch's He-style) or normal: N(0, 0.1) as in the lecture
    # optimisation
    epochs: int = 10
    batch_size: int = 128  # images per step, over all processes
    optimizer: str = "sgd"  # sgd (Nesterov momentum) or adamw
    lr: float = 0.1  # peak learning rate of the one-cycle schedule
    momentum: float = 0.9
    weight_decay: float = 5e-4  # on weights only; BN and biases are not decayed
    warmup: float = 0.2  # share of all steps spent rising to the peak learning rate
    label_smoothing: float = 0.1
    loss: str = "cross_entropy"  # cross_entropy or squared (the lecture's squared error on sigmoid outputs)
    ema: float = 0.0  # decay of the weights' exponential moving average per step; 0 = off
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tta: bool = False  # evaluate and predict average over test-time views (predict.TTA_VIEWS) by default
    flips: float = 0.0  # probability of a class-aware flip (GTSRB classes only); 0 = off
    # machine
    bf16: bool = True  # bf16 autocast where the hardware has it (CPU with AVX-512 bf16, CUDA)
    channels_last: bool = True
    compile: bool = False  # torch.compile the model (pays on long runs: the first step compiles for ~45 s on CPU)
    device: str = "auto"  # auto, cpu or cuda
    threads: int = 0  # torch intra-op threads; 0 = all cores
    seed: int = 0
    # run folder
    out: str = "runs/latest"
    resume: bool = False
    overwrite: bool = False  # start again in a run folder that holds a run
    force_resume: bool = False  # resume even if the config differs, saying what it overrides
    keep: int = 3  # epoch checkpoints kept besides the best
    progress: bool = True  # progress bar per epoch
    preset: str | None = None

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
        """A saved config (config.json, a weights file) from before a field existed meant that field's old
        behaviour, not today's default: weights trained on raw pixels must be evaluated on raw pixels."""
        return {**LEGACY_DEFAULTS, **saved}

    def save(self, path: Path) -> None:
        """Atomically: a kill mid-write must not leave a half file that breaks --resume."""
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)


def load_preset(name: str) -> dict:
    """A preset is a JSON file of TrainConfig fields shipped in signlab/presets/ (or any path)."""
    path = Path(name) if name.endswith(".json") else PRESET_DIR / f"{name}.json"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.json")))
        raise UserError(f"--preset {name}: no such preset; choose one of {names} or give a .json file")
    try:
        preset = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e}); fix the file") from None
    preset.pop("_comment", None)
    return preset


def config_differences(saved: dict, current: dict) -> list[str]:
    """Fields, other than those free to change on resume, whose values differ: 'name: saved -> current'."""
    keys = (set(saved) | set(current)) - RESUME_FREE_FIELDS
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in sorted(keys) if saved.get(k) != current.get(k)]


def resolve_config(cfg: TrainConfig, overrides: dict, log: Callable[[str], object] = print) -> TrainConfig:
    """On --resume the saved config is the base; explicitly given flags that change it need --force-resume."""
    saved_path = Path(cfg.out) / "config.json"
    if not (cfg.resume and saved_path.is_file()):
        return cfg
    saved = TrainConfig.with_legacy_defaults(json.loads(saved_path.read_text()))
    # A flag inside a nested config (augment, model_options) changes that field, not the whole saved dict.
    merged = {k: {**saved[k], **v} if isinstance(v, dict) and isinstance(saved.get(k), dict) else v
              for k, v in overrides.items()}
    merged = {**saved, **merged, "resume": True}
    diffs = config_differences(saved, merged)
    if diffs and not cfg.force_resume:
        raise UserError(f"--resume: the config differs from {saved_path} in {'; '.join(diffs)}; "
                        f"drop those flags or pass --force-resume to override")
    for d in diffs:
        log(f"resume: overriding {d}")
    return TrainConfig.from_dict(merged)
