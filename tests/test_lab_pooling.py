"""The lab's pooling experiment: its shift and zoom are exact where they should be, the three variants have the
same parameters, and global averaging over unshrunk maps is invariant to circular shifts where the others are not."""

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from signlab.lab.experiments.pooling import (  # noqa: E402
    DIRECTIONS,
    VARIANTS,
    PoolingCNN,
    rescale,
    run_pooling,
    shift,
    shift_each,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))  # (N, 3, 32, 32)


@pytest.mark.parametrize(("dy", "dx"), [(0, 3), (0, -8), (5, 0), (-2, 6), (8, 8)])
def test_shift_moves_content_exactly_and_back_restores_the_interior(dy, dx):
    x = images()
    moved = shift(x, dy, dx)
    rows, cols = slice(max(0, dy), 32 + min(0, dy)), slice(max(0, dx), 32 + min(0, dx))
    src_rows, src_cols = slice(max(0, -dy), 32 - max(0, dy)), slice(max(0, -dx), 32 - max(0, dx))
    assert torch.equal(moved[..., rows, cols], x[..., src_rows, src_cols])
    back = shift(moved, -dy, -dx)
    # shifting back restores every pixel that never left the frame, bit for bit
    keep_rows, keep_cols = slice(max(0, -dy), 32 - max(0, dy)), slice(max(0, -dx), 32 - max(0, dx))
    assert torch.equal(back[..., keep_rows, keep_cols], x[..., keep_rows, keep_cols])
    assert not torch.equal(back, x)  # the pixels that did leave are gone


def test_shift_fills_with_the_images_own_edge():
    x = images()
    moved = shift(x, 0, 4)  # right: the first 4 columns repeat column 0
    assert torch.equal(moved[..., :4], x[..., :1].expand(-1, -1, -1, 4))
    assert torch.equal(shift(x, 0, 0), x)


def test_shift_each_moves_every_fourth_image_the_same_way():
    x = images(8)
    out = shift_each(x, 3)
    for i in range(8):
        dy, dx = DIRECTIONS[i % 4]
        assert torch.equal(out[i], shift(x[i : i + 1], 3 * dy, 3 * dx)[0])


def test_rescale_is_identity_at_one_and_grows_a_centred_disc():
    x = images()
    assert torch.equal(rescale(x, 1.0), x)
    flat = torch.full((1, 3, 32, 32), 0.7)
    torch.testing.assert_close(rescale(flat, 0.7), flat)  # what comes into view repeats the edge
    yy, xx = torch.meshgrid(torch.arange(32) - 15.5, torch.arange(32) - 15.5, indexing="ij")
    disc = ((yy**2 + xx**2) < 8**2).float().expand(1, 3, 32, 32)
    area = {s: (rescale(disc, s) > 0.5).sum().item() for s in (0.7, 1.0, 1.3)}
    assert area[0.7] < area[1.0] < area[1.3]
    assert math.isclose(area[1.3] / area[1.0], 1.3**2, rel_tol=0.15)


def test_the_three_variants_have_the_same_parameters_and_output_shape():
    nets = [PoolingCNN(43, v) for v in VARIANTS]
    counts = {sum(p.numel() for p in n.parameters()) for n in nets}
    assert len(counts) == 1  # a strided conv has a plain conv's weights, and max-pool has none
    for n in nets:
        assert n(images(2)).shape == (2, 43)
    assert [n.last_map(images(2)).shape[-1] for n in nets] == [8, 4, 32]
    with pytest.raises(ValueError):
        PoolingCNN(43, "avg-pool")


@torch.no_grad()
def pooled(net: PoolingCNN, x: torch.Tensor) -> torch.Tensor:
    return net.pooled(net.last_map(x))  # (N, 32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_global_average_is_invariant_to_circular_shifts_of_its_period(variant):
    # With circular padding each conv is exactly equivariant to circular shifts: the unshrunk net's average
    # then cannot see any shift; the 8× downsampling nets only shifts by a multiple of 8 px.
    torch.manual_seed(0)
    net = PoolingCNN(43, variant, padding_mode="circular").eval()
    x = images()
    p = pooled(net, x)
    period = 1 if variant == "no-downsampling" else 8
    for k in (period, 2 * period, 8):
        torch.testing.assert_close(pooled(net, torch.roll(x, (k, -k), dims=(2, 3))), p, rtol=1e-4, atol=1e-5)
    change = (pooled(net, torch.roll(x, 1, dims=3)) - p).norm() / p.norm()
    if variant == "no-downsampling":
        assert change < 1e-4
    else:
        assert change > 1e-2  # 1 px falls between the 2×2 windows and the strides: the features change


def test_smoke_run(tmp_path):
    res = run_pooling(out=tmp_path, budget="smoke")
    assert res["finite"] and (tmp_path / "pooling.png").exists()
    for v in VARIANTS:
        r = res[v]
        assert len(r["shift"]["mean"]) == len(res["shifts"]) and len(r["scale"]["mean"]) == len(res["scales"])
        assert all(0 <= a <= 1 for a in r["shift"]["mean"] + r["scale"]["mean"])
        assert r["feature_change"]["mean"][0] == 0 and r["centroid_move"]["mean"][0] == 0  # k = 0 moves nothing
    # even barely trained, the net that keeps its full map changes what its head sees least for a 1-px shift
    change = {v: res[v]["feature_change"]["mean"][1] for v in VARIANTS}
    assert change["no-downsampling"] < min(change["max-pool"], change["strided"])
