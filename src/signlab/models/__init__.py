"""Model registry: every architecture registers a factory by name; the CLI and tests iterate over them."""

from __future__ import annotations

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


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = 43, image_size: int = 32, init: str = "default",
                 **options) -> nn.Module:
    """Build a registered model; `init="normal"` draws every weight from N(0, 0.1) as in the lecture."""
    if name not in _REGISTRY:
        raise UserError(f"--model {name}: unknown model; choose one of {', '.join(list_models())}")
    try:
        model = _REGISTRY[name](num_classes=num_classes, image_size=image_size, **options)
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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, image_size: int = 32, in_channels: int = 3) -> int:
    """Multiply-accumulates of one image's forward pass through the convolutions and linear layers."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inputs, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inputs, out: torch.Tensor) -> None:
        nonlocal total
        total += out[0].numel() * m.in_features

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, in_channels, image_size, image_size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


# Import the families so that their @register_model decorators run.
from signlab.models import lenet, mlp, signnet, stn  # noqa: E402, F401
