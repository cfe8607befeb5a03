import pytest
import torch

from signlab.errors import UserError
from signlab.models import count_macs, count_parameters, create_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    logits = model(x)
    assert logits.shape == (4, 43)
    logits.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert count_parameters(model) > 0 and count_macs(model) > count_parameters(model) // 100


@pytest.mark.parametrize("name", list_models())
def test_one_batch_overfit(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5)
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 5
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() == 1.0 or loss.item() < 0.05


def test_counts_for_known_layers():
    mlp = create_model("mlp", hidden=10, num_classes=4)
    assert count_parameters(mlp) == 3072 * 10 + 10 + 10 * 4 + 4
    assert count_macs(mlp) == 3072 * 10 + 10 * 4


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
    assert count_macs(one_conv_first) < count_macs(create_model("signnet"))
    with pytest.raises(UserError, match="--model signnet: bad model option .*one per stage"):
        create_model("signnet", depth=[1, 2])
