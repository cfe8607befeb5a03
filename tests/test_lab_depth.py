"""The depth experiment: equal parameter budgets, every net runs, and the ablations change one thing each.

No directional check: on a smoke budget (256 images, one epoch) every net is still near chance and which
depth comes out ahead changes with the seed, so no claim of the experiment (depth helps the CNN, plain
depth stops helping the MLP, the deep sigmoid MLP stays at chance) is robust enough there to test.
"""

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from torch import nn  # noqa: E402

from signlab.errors import UserError  # noqa: E402
from signlab.lab.experiments import EXPERIMENTS  # noqa: E402
from signlab.lab.experiments import depth as dep  # noqa: E402
from signlab.lab.experiments.common import load_data, num_params  # noqa: E402

D, M = 32 * 32 * 3, 43


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def mlp_width(depth, m=M):
    return dep.match_width(lambda w: dep.mlp_params(D, m, depth, w), dep.MLP_BUDGET)


def cnn_width(depth, m=M):
    return dep.match_width(lambda w: dep.cnn_params(m, depth, w), dep.CNN_BUDGET, widest=512)


@pytest.mark.parametrize("m", [M, 4])
def test_every_depth_gets_the_same_parameter_budget_within_a_few_percent(m):
    for depth in dep.MLP_DEPTHS:
        assert abs(dep.mlp_params(D, m, depth, mlp_width(depth, m)) / dep.MLP_BUDGET - 1) < 0.03
    for depth in dep.CNN_DEPTHS:
        assert abs(dep.cnn_params(m, depth, cnn_width(depth, m)) / dep.CNN_BUDGET - 1) < 0.03
    # and the budget is really shared out: deeper nets are narrower
    assert [mlp_width(k, m) for k in dep.MLP_DEPTHS] == sorted((mlp_width(k, m) for k in dep.MLP_DEPTHS),
                                                               reverse=True)
    assert cnn_width(2, m) > cnn_width(8, m)


@pytest.mark.parametrize("depth", dep.MLP_DEPTHS)
def test_the_mlp_has_the_counted_parameters_and_depth_hidden_layers(depth):
    w = mlp_width(depth)
    net = dep.mlp(D, M, depth, w)
    assert num_params(net) == dep.mlp_params(D, M, depth, w)
    linears = [layer for layer in net if isinstance(layer, nn.Linear)]
    assert len(linears) == depth + 1
    assert sum(isinstance(layer, nn.ReLU) for layer in net) == depth  # none after the output layer
    assert net(torch.zeros(5, 3, 32, 32)).shape == (5, M)


@pytest.mark.parametrize("depth", dep.CNN_DEPTHS)
def test_the_cnn_has_the_counted_parameters_and_ends_on_4x4_maps(depth):
    w = cnn_width(depth)
    net = dep.DepthCNN(M, depth, w)
    assert num_params(net) == dep.cnn_params(M, depth, w)
    assert sum(isinstance(layer, nn.Conv2d) for layer in net.body) == depth
    assert sum(isinstance(layer, nn.MaxPool2d) for layer in net.body) == 3  # 32 → 4 at every depth
    net.eval()
    assert net.body(torch.zeros(2, 3, 32, 32)).shape == (2, w, 4, 4)
    assert net(torch.zeros(2, 3, 48, 48)).shape == (2, M)  # other sizes are squeezed to 4×4 before the head


def test_pools_split_the_deep_cnns_layers_between_16_and_8_pixel_maps():
    assert dep.pool_after(2) == {0, 1}
    assert dep.pool_after(4) == {0, 2, 3}
    assert dep.pool_after(8) == {0, 4, 7}


def test_the_inits_are_he_and_the_slides_normal():
    torch.manual_seed(0)
    he, normal = dep.mlp(D, M, 2, 200), dep.mlp(D, M, 2, 200, init="normal")
    w_he, w_n = he[1].weight.detach(), normal[1].weight.detach()  # the first linear layer, fan-in 3072
    assert w_he.std().item() == pytest.approx(math.sqrt(2 / D), rel=0.05)
    assert w_n.std().item() == pytest.approx(0.1, rel=0.05)
    assert not he[1].bias.detach().any() and not normal[1].bias.detach().any()
    assert isinstance(dep.mlp(D, M, 2, 8, act="sigmoid")[2], nn.Sigmoid)


def test_each_ablation_takes_away_exactly_one_trick():
    baseline = ("relu", "he", True)
    for name, recipe in dep.ABLATIONS.items():
        assert sum(a != b for a, b in zip(recipe, baseline, strict=True)) == 1, name




def test_raw_pixels_are_unstandardised_in_0_1(tiny_image_set):
    x_tr, x_va = dep.raw_tensors(load_data(tiny_image_set, "full"))
    assert x_tr.shape[1:] == (3, 32, 32) and 0 <= x_tr.min() and x_tr.max() <= 1 and x_tr.mean() > 0.3


def test_every_net_trains_on_a_given_set_and_reports_its_curves(tmp_path, capsys, tiny_image_set):
    torch.set_num_threads(2)
    res = EXPERIMENTS["depth"][1](data=tiny_image_set, out=tmp_path, budget="smoke")
    assert torch.get_num_threads() == 2  # the experiment's one-thread setting does not leak out
    runs = res["runs"]
    assert set(runs) == ({f"mlp {k}" for k in dep.MLP_DEPTHS} | {f"cnn {k}" for k in dep.CNN_DEPTHS}
                         | {f"mlp {dep.MLP_DEPTHS[-1]}, {a}" for a in dep.ABLATIONS})
    for name, r in runs.items():
        epochs = (dep.CNN_EPOCHS if name.startswith("cnn") else dep.MLP_EPOCHS)["smoke"]
        assert len(r["curve_mean"]) == len(r["curve_sd"]) == epochs
        assert r["val_mean"] == pytest.approx(r["curve_mean"][-1]) and 0 <= r["val_mean"] <= 1
        assert r["val_sd"] >= 0 and r["params"] > 0
    mlps = [r["params"] for n, r in runs.items() if n.startswith("mlp")]
    assert max(mlps) / min(mlps) < 1.03  # the 4-class head changes the budget but not its fairness
    assert res["finite"] and name in capsys.readouterr().out
    assert (tmp_path / "depth.png").stat().st_size > 1000


def test_a_bad_budget_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        dep.run_depth(out=tmp_path, budget="tiny")
