"""Model registry: every architecture registers a factory by name; the CLI and tests iterate over them."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from signlab.errors import UserError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a factory `fn(num_classes, image_size, **options) -> nn.Module` under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def train_defaults(name: str) -> dict:
    """Training settings a model needs unless the user sets them (e.g. a lower learning rate for the MLP)."""
    return dict(getattr(_REGISTRY.get(name), "train_defaults", {}))


def model_task(name: str) -> str:
    """What a registered model does: "classify" (a sign crop -> class logits) or "detect" (a scene -> maps)."""
    return getattr(_REGISTRY.get(name), "task", "classify")


def list_models(task: str | None = None) -> list[str]:
    """Registered model names; with task ("classify" or "detect"), only the models of that task."""
    return sorted(n for n in _REGISTRY if task is None or model_task(n) == task)


def create_model(name: str, num_classes: int | None = None, image_size: int = 32, init: str = "default",
                 **options) -> nn.Module:
    """Build a registered model; `init="normal"` draws every weight from N(0, 0.1) as in the lecture.
    num_classes None: the factory's default (43 GTSRB classes; a detector's sign categories)."""
    if name not in _REGISTRY:
        raise UserError(f"--model {name}: unknown model; choose one of {', '.join(list_models())}")
    if num_classes is not None:
        options["num_classes"] = num_classes
    try:
        model = _REGISTRY[name](image_size=image_size, **options)
    except (TypeError, ValueError) as e:
        raise UserError(f"--model {name}: bad model option ({e}); check the preset's model_options") from None
    if init == "normal":
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.1)  # the lecture's N(0, 0.1): 0.1 is the std
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in model.modules():  # a spatial transformer must still start as the identity
            if hasattr(m, "reset_to_identity"):
                m.reset_to_identity()
    elif init != "default":
        raise UserError(f"--init {init}: unknown init; use default or normal")
    return model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of a model in eval mode with every BatchNorm that directly follows a convolution in a
    Sequential folded into that convolution's weights and bias: the same function up to float rounding, without
    a pass over each activation map (a fifth of the finder's time on a CPU). The model itself is untouched."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d) \
                    and seq[i + 1].running_mean is not None:
                seq[i], seq[i + 1] = fuse_conv_bn_eval(seq[i], seq[i + 1]), nn.Identity()
    return folded


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, image_size: int | tuple[int, int] = 32, in_channels: int = 3) -> int:
    """Multiply-accumulates (MACs) of one image's forward pass in eval mode, counted by torch's own
    `torch.utils.flop_counter.FlopCounterMode`: MACs = its FLOPs / 2. image_size: S for an S×S image, or
    (H, W) (a whole scene for the sign finder).

    What counts: the convolutions (aten.convolution: out_pixels x C_in/groups x k x k per output channel) and
    the matrix products (mm, addmm, bmm, baddbmm: every nn.Linear, any matmul; attention kernels too).
    What does not: biases, BatchNorm, activations, pooling, the global max/mean, elementwise ops, and the
    spatial transformer's sampling (signnet_stn, signnet_wide_stn): aten.affine_grid_generator and
    aten.grid_sampler_2d have no formula there (about 6 + 12 MACs a pixel by hand, 18k at 32x32: 0.2 % of
    signnet_stn's 10.3M). Its localisation net (convolutions, the linear layer predicting theta) is counted.
    For the registered models this equals the conv + linear count that forward hooks gave before.
    Raises RuntimeError when the model cannot take an image of this size.
    """
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters(), None)
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    x = torch.zeros(1, in_channels, h, w,
                    device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None else torch.float32)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()  # no BatchNorm statistics are updated, no dropout is drawn
    try:
        with counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


# Import the families so that their @register_model decorators run.
from signlab.models import detector, lenet, mlp, signnet, stn  # noqa: E402, F401
