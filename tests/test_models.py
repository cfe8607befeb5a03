"""Models: shapes and gradients, hand-counted MACs and parameters, and that every model learns a toy task.

Everything runs in fp32 on the CPU (no autocast): the counts are exact and the learning check is seeded.
"""

import pytest
import torch

from signlab.errors import UserError
from signlab.models import count_macs, count_parameters, create_model, fold_batchnorm, list_models, model_task

# MACs of one 32x32 RGB image, counted by hand layer by layer: a k x k convolution costs
# H_out * W_out * C_out * C_in * k * k, a linear layer in_features * out_features; nothing else counts.
SIGNNET = (32 * 32 * 16 * 3 * 9 + 32 * 32 * 16 * 16 * 9  # stage 1 at 32x32: 3->16, 16->16
           + 16 * 16 * 32 * 16 * 9 + 16 * 16 * 32 * 32 * 9  # stage 2 at 16x16: 16->32, 32->32
           + 8 * 8 * 64 * 32 * 9 + 8 * 8 * 64 * 64 * 9  # stage 3 at 8x8: 32->64, 64->64
           + 2 * 64 * 43)  # head on the concatenated global max and mean
SIGNNET_WIDE = (32 * 32 * 32 * 3 * 9 + 32 * 32 * 32 * 32 * 9 + 16 * 16 * 64 * 32 * 9 + 16 * 16 * 64 * 64 * 9
                + 8 * 8 * 128 * 64 * 9 + 8 * 8 * 128 * 128 * 9 + 2 * 128 * 43)
# The spatial transformer's localisation net: max-pool to 16x16, conv 3->16, max-pool to 8x8, conv 16->32,
# average-pool to 4x4, linear 512 -> 6. affine_grid and grid_sample are not counted (see count_macs).
STN = 16 * 16 * 16 * 3 * 9 + 8 * 8 * 32 * 16 * 9 + 32 * 16 * 6
KNOWN_MACS = {
    "mlp": 3 * 32 * 32 * 512 + 512 * 43,
    "lenet": 32 * 32 * 32 * 3 * 25 + 16 * 16 * 64 * 32 * 25 + 64 * 8 * 8 * 256 + 256 * 43,
    "signnet": SIGNNET,
    "signnet_wide": SIGNNET_WIDE,
    "signnet_stn": SIGNNET + STN,
    "signnet_wide_stn": SIGNNET_WIDE + STN,
}


def test_every_model_has_a_hand_count():
    assert sorted(KNOWN_MACS) == list_models(task="classify"), "a new model needs its MACs counted by hand here"


@pytest.mark.parametrize("name", list_models(task="classify"))
def test_macs_of_the_defaults_match_the_hand_count(name):
    assert count_macs(create_model(name)) == KNOWN_MACS[name]


def test_macs_published_in_the_docstrings():
    assert KNOWN_MACS["signnet"] == 9_885_056 and KNOWN_MACS["signnet_wide"] == 38_644_480  # "9.9M", "38.6M"
    assert STN == 408_576  # "a 0.4M-MAC spatial transformer"


def test_macs_of_small_models_by_hand():
    mlp = create_model("mlp", hidden=16)
    assert count_macs(mlp) == 3 * 32 * 32 * 16 + 16 * 43 == 49_840
    tiny = create_model("lenet", image_size=8, widths=(2, 4), hidden=8, kernel=3)
    # conv 3->2 at 8x8, conv 2->4 at 4x4, linear 4*2*2 -> 8, linear 8 -> 43
    assert count_macs(tiny, image_size=8) == 8 * 8 * 2 * 3 * 9 + 4 * 4 * 4 * 2 * 9 + 16 * 8 + 8 * 43 == 5_080
    grey = create_model("mlp", hidden=16, in_channels=1, image_size=16)
    assert count_macs(grey, image_size=16, in_channels=1) == 16 * 16 * 16 + 16 * 43


def test_macs_follow_the_image_size():
    # 48x48 has 2.25x the pixels of 32x32 in every convolution; the head after global pooling stays the same.
    head = 2 * 64 * 43
    assert count_macs(create_model("signnet"), image_size=48) == (SIGNNET - head) * 9 // 4 + head == 22_234_496
    with pytest.raises(RuntimeError):
        count_macs(create_model("lenet"), image_size=30)  # the flattened size no longer fits: config relies on it


def test_count_macs_leaves_the_model_as_it_was():
    model = create_model("signnet_stn", dropout=0.5).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model)
    assert model.training and model.net.dropout.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "BatchNorm statistics must not move"


def test_parameters_by_hand():
    mlp = create_model("mlp", hidden=10, num_classes=4)
    assert count_parameters(mlp) == 3072 * 10 + 10 + 10 * 4 + 4
    assert count_macs(mlp) == 3072 * 10 + 10 * 4
    # signnet: bias-free 3x3 convs, BatchNorm weight and bias per channel, a linear head with bias: "78k".
    convs = 3 * 16 * 9 + 16 * 16 * 9 + 16 * 32 * 9 + 32 * 32 * 9 + 32 * 64 * 9 + 64 * 64 * 9
    assert count_parameters(create_model("signnet")) == convs + 2 * (16 + 16 + 32 + 32 + 64 + 64) + 128 * 43 + 43


@pytest.mark.parametrize("name", list_models(task="classify"))
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    logits = model(x)
    assert logits.shape == (4, 43) and logits.dtype == torch.float32
    assert torch.allclose(model(x), logits)  # no hidden randomness at the default dropout of 0
    logits.logsumexp(1).mean().backward()
    grads = dict(model.named_parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in grads.values())
    # Every weight gets a gradient, but a spatial transformer's localisation net: its warp starts as the
    # identity with theta's weight at zero, so it learns from the second step on.
    zero = {n for n, p in grads.items() if not p.grad.abs().sum() > 0}
    assert zero == {n for n in grads if n.startswith("stn.loc.")}


@pytest.mark.parametrize("name", list_models())
def test_folding_batchnorm_keeps_the_function_and_leaves_the_model_alone(name):
    """fold_batchnorm (the finder's inference copy) computes what the model in eval mode computes, with running
    statistics and affine parameters far from their initial values, and touches neither the model's weights
    nor its training mode."""
    torch.manual_seed(0)
    model = create_model(name)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.2, 3.0)
            torch.nn.init.normal_(m.weight, 1.0, 0.3)
            torch.nn.init.normal_(m.bias, 0.0, 0.3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    x = torch.randn(2, 3, 64, 64) if model_task(name) == "detect" else torch.randn(2, 3, 32, 32)
    assert model.training and not folded.training
    with torch.no_grad():
        expected, got = model.eval()(x), folded(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4), (got - expected).abs().max()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    def count(net, kind):
        return sum(isinstance(m, kind) for m in net.modules())

    # every registered model's BatchNorms follow a convolution: all of them go, each leaving an Identity
    assert count(folded, torch.nn.BatchNorm2d) == 0
    assert count(folded, torch.nn.Identity) - count(model, torch.nn.Identity) == count(model, torch.nn.BatchNorm2d)


# ---------------------------------------------------------------- every model learns a separable toy task

COLOURS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])


def coloured_squares(per_class: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy standardised images (fp32) with one square of its class's colour (red, green, blue, yellow)
    of random side (a quarter to half the image) at a random place."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(4).repeat_interleave(per_class)
    x = 0.5 * torch.randn(len(y), 3, size, size, generator=g, dtype=torch.float32)
    for i, label in enumerate(y.tolist()):
        side = int(torch.randint(size // 4, size // 2 + 1, (1,), generator=g))
        top, left = torch.randint(0, size - side + 1, (2,), generator=g).tolist()
        x[i, :, top:top + side, left:left + side] += COLOURS[label].view(3, 1, 1)
    return x, y


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("name", list_models(task="classify"))
def test_every_model_learns_coloured_squares(name):
    """100 % training accuracy (eval mode, BatchNorm running statistics) within 200 Adam steps, and the
    colour, not the noise, learnt: at least 90 % on squares it has not seen. About a second a model."""
    torch.manual_seed(0)
    x, y = coloured_squares(32, 16, seed=0)
    model = create_model(name, num_classes=4, image_size=16)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    train_acc = 0.0
    for step in range(1, 201):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 and (train_acc := accuracy(model, x, y)) == 1.0:
            break
    assert train_acc == 1.0, f"{name}: {train_acc:.1%} training accuracy after {step} steps"
    assert accuracy(model, *coloured_squares(50, 16, seed=1)) >= 0.9


# ---------------------------------------------------------------- options and errors


def test_lecture_init_and_options():
    model = create_model("mlp", init="normal", hidden=2000, activation="sigmoid")
    assert abs(model.W.weight.std().item() - 0.1) < 0.002 and model.W.bias.abs().sum() == 0
    assert isinstance(model.act, torch.nn.Sigmoid)


def test_unknown_model():
    with pytest.raises(UserError, match="--model nope: unknown model; choose one of"):
        create_model("nope")


@pytest.mark.parametrize("init", ["default", "normal"])
def test_spatial_transformer_starts_as_the_identity(init):
    model = create_model("signnet_stn", init=init)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model.stn(x), x, atol=1e-5)


def test_signnet_depth_per_stage():
    one_conv_first = create_model("signnet", depth=[1, 2, 2])
    convs = [m for m in one_conv_first.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 16), (16, 32), (32, 32), (32, 64), (64, 64)]
    assert count_macs(one_conv_first) == SIGNNET - 32 * 32 * 16 * 16 * 9 == 7_525_760  # README: "7.5 M MACs"
    with pytest.raises(UserError, match="--model signnet: bad model option .*one per stage"):
        create_model("signnet", depth=[1, 2])
