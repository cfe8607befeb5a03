"""Augmentation: determinism, the identity, saturation, erasing, colour casts, camera faults, class-aware flips."""

import math

import torch

from signlab.augment import (
    AugmentConfig,
    affine_warp,
    augment_batch,
    cast_color,
    degrade,
    flip_batch,
    gaussian_blur,
    gtsrb_flip_tables,
    jitter_saturation,
    random_erase,
)

NO_GEOMETRY = dict(rotate_degrees=0.0, scale=0.0, translate=0.0, brightness=0.0, contrast=0.0)


def batch(b: int = 8, size: int = 16) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(1))  # (B, C, H, W)


def test_all_zero_config_is_the_identity():
    x = batch()
    assert AugmentConfig(**NO_GEOMETRY).is_identity()
    assert augment_batch(x, AugmentConfig(**NO_GEOMETRY), torch.Generator()) is x


def test_same_seed_same_augmentation_other_seed_other():
    x, cfg = batch(), AugmentConfig(saturation=0.5, erase=0.5)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    c = augment_batch(x, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_saturation_zero_is_grey_one_is_unchanged():
    x = batch()
    grey = jitter_saturation(x, torch.zeros(len(x)))
    assert torch.allclose(grey, grey[:, :1].expand_as(grey))  # all channels equal
    assert torch.allclose(grey[:, 0], x.mean(1))
    assert torch.allclose(jitter_saturation(x, torch.ones(len(x))), x, atol=1e-6)


def test_erase_fills_one_rectangle_per_image_in_all_channels():
    x = torch.full((16, 3, 32, 32), 100.0)  # far from any standard-normal noise value
    out = random_erase(x, 1.0, torch.Generator().manual_seed(0))
    changed = (out != x).all(1)  # (B, H, W): erased in every channel
    assert torch.equal(changed, (out != x).any(1))
    for mask in changed:
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all(), "the erased pixels form one filled rectangle"
        # 2-20 % of the area, give or take the rounding of a box of 2.6 to 25 px sides to whole pixels
        assert 0.01 <= mask.float().mean() <= 0.25
    noise = out.permute(1, 0, 2, 3)[:, changed]  # (C, erased pixels): standard normal noise
    assert abs(noise.mean().item()) < 0.1 and abs(noise.std().item() - 1) < 0.1
    assert torch.equal(random_erase(x, 0.0, torch.Generator()), x)
    half = (random_erase(torch.full((400, 3, 8, 8), 100.0), 0.5, torch.Generator().manual_seed(1)) != 100).any(1)
    assert 160 <= half.flatten(1).any(1).sum() <= 240  # p = 0.5: about half the images get a rectangle


def test_erasing_leaves_the_warp_of_earlier_runs_unchanged():
    """Runs saved before erasing existed draw the same warp and jitter: the new draws come after."""
    x = batch()
    plain = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(5))
    erased = augment_batch(x, AugmentConfig(erase=1.0), torch.Generator().manual_seed(5))
    kept = (erased == plain).all(1)
    assert 0.7 < kept.float().mean() < 1.0


def test_color_cast_is_one_affine_map_per_channel_within_its_spread():
    x = batch()
    out = cast_color(x, 0.2, torch.Generator().manual_seed(0))
    flat_x, flat_out = x.flatten(2), out.flatten(2)  # (B, C, H*W)
    gain = ((flat_out - flat_out.mean(2, keepdim=True)) / (flat_x - flat_x.mean(2, keepdim=True))).median(2).values
    shift = (flat_out - gain.unsqueeze(2) * flat_x).mean(2)
    assert torch.allclose(flat_out, gain.unsqueeze(2) * flat_x + shift.unsqueeze(2), atol=1e-5)
    assert ((gain - 1).abs() <= 0.2 + 1e-6).all() and (shift.abs() <= 0.2 + 1e-6).all()
    assert gain.std(1).min() > 0, "each channel gets its own gain"
    plain = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(5))  # earlier draws unchanged
    cast = augment_batch(x, AugmentConfig(color_cast=0.2), torch.Generator().manual_seed(5))
    assert torch.allclose(cast, cast_color(plain, 0.2, _after_warp_and_jitter(5)), atol=1e-6)


def test_gaussian_blur_matches_a_two_dimensional_kernel_per_image():
    x = batch(3, 12)
    sigma = torch.tensor([0.5, 1.0, 1.5])
    out = gaussian_blur(x, sigma)
    radius = 5  # ceil(3 * 1.5): every image's kernel has the widest image's taps
    taps = torch.arange(-radius, radius + 1.0)
    for i in range(3):
        g = torch.exp(-taps ** 2 / (2 * sigma[i] ** 2))
        kernel = torch.outer(g, g) / g.sum() ** 2  # (K, K)
        padded = torch.nn.functional.pad(x[i:i + 1], (radius,) * 4, mode="replicate")
        ref = torch.nn.functional.conv2d(padded, kernel.expand(3, 1, -1, -1).contiguous(), groups=3)
        assert torch.allclose(out[i:i + 1], ref, atol=1e-5)
    flat = torch.full((2, 3, 8, 8), 0.7)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([1.0, 2.0])), flat), "a flat image stays flat"


def test_degrade_applies_one_fault_to_about_p_of_the_images():
    x = torch.randn(600, 3, 32, 32, generator=torch.Generator().manual_seed(2))  # white noise, sd 1
    assert torch.equal(degrade(x, 0.0, torch.Generator()), x)
    out = degrade(x, 1.0, torch.Generator().manual_seed(0))
    sd = out.flatten(1).std(1)  # (B,)
    # blur (sigma >= 0.5 px) and low resolution (<= 24 of 32 px) take away much of white noise's variance;
    # sensor noise (sd 0.1-0.4) adds to it and keeps the image: each fault shows by its own signature
    added = (out - x).flatten(1).std(1)
    smoothed = sd < 0.9
    noisy = ~smoothed & (added > 0.08) & (added < 0.45)
    assert (smoothed | noisy).all(), "every image gets one fault"
    assert 0.25 < noisy.float().mean() < 0.42, "a third of the faults are noise"
    half = (degrade(x, 0.5, torch.Generator().manual_seed(1)) != x).flatten(1).any(1).float().mean()
    assert 0.42 < half < 0.58


def test_degrade_scales_its_faults_with_the_input_side(monkeypatch):
    import signlab.augment as augment

    sigmas, sides = [], []
    blur, interpolate = augment.gaussian_blur, augment.F.interpolate

    def record_blur(x, sigma):
        sigmas.extend(sigma.tolist())
        return blur(x, sigma)

    def record_interpolate(x, size, **kw):
        if size[0] < x.shape[2]:  # the way down
            sides.append(size[0])
        return interpolate(x, size=size, **kw)

    monkeypatch.setattr(augment, "gaussian_blur", record_blur)
    monkeypatch.setattr(augment.F, "interpolate", record_interpolate)
    x = torch.randn(300, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    out = degrade(x, 1.0, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert sigmas and 1.0 <= min(sigmas) and max(sigmas) <= 3.0 and max(sigmas) > 2.0  # 0.5-1.5 px at 32 px
    assert sides and 20 <= min(sides) and max(sides) <= 48 and max(sides) > 40  # 10-24 px at 32 px


def test_degrade_comes_after_the_earlier_draws():
    """Runs saved before camera faults existed draw the same warp and jitter: the new draws come after."""
    x = batch()
    plain = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(5))
    faulty = augment_batch(x, AugmentConfig(degrade=0.7), torch.Generator().manual_seed(5))
    assert torch.allclose(faulty, degrade(plain, 0.7, _after_warp_and_jitter(5)), atol=1e-6)
    assert not AugmentConfig(**NO_GEOMETRY, degrade=0.1).is_identity()


def test_warp_known_answers():
    x = batch(1, 8)
    none, one = torch.zeros(1), torch.ones(1)
    assert torch.allclose(affine_warp(x, none, one, torch.zeros(1, 2)), x, atol=1e-6)
    # +-90 degrees map pixel centres onto pixel centres: an exact quarter turn each way
    assert torch.allclose(affine_warp(x, torch.full((1,), math.pi / 2), one, torch.zeros(1, 2)),
                          torch.rot90(x, 1, (2, 3)), atol=1e-5)
    assert torch.allclose(affine_warp(x, torch.full((1,), -math.pi / 2), one, torch.zeros(1, 2)),
                          torch.rot90(x, -1, (2, 3)), atol=1e-5)
    # shift is in half-sides: 0.25 of an 8-pixel image is one pixel; the content moves left (up), 0 fills in
    left = affine_warp(x, none, one, torch.tensor([[0.25, 0.0]]))
    assert torch.allclose(left[..., :7], x[..., 1:], atol=1e-6) and (left[..., 7] == 0).all()
    up = affine_warp(x, none, one, torch.tensor([[0.0, 0.25]]))
    assert torch.allclose(up[..., :7, :], x[..., 1:, :], atol=1e-6) and (up[..., 7, :] == 0).all()
    # zoom 2 of a ramp 0..7 shows its middle half: 1.75, 2.25, ..., 5.25
    ramp = torch.arange(8.0).expand(1, 1, 8, 8)
    zoomed = affine_warp(ramp, none, torch.full((1,), 2.0), torch.zeros(1, 2))
    assert torch.allclose(zoomed, (1.75 + 0.5 * torch.arange(8.0)).expand(1, 1, 8, 8), atol=1e-5)


def test_brightness_and_contrast_are_one_affine_map_per_image():
    x = batch(32)
    only = dict(NO_GEOMETRY)
    shifted = augment_batch(x, AugmentConfig(**dict(only, brightness=0.2)), torch.Generator().manual_seed(0))
    bias = (shifted - x).flatten(1)  # (B, pixels): one constant per image
    assert torch.allclose(bias, bias[:, :1].expand_as(bias), atol=1e-5)
    assert (bias[:, 0].abs() <= 0.2 + 1e-6).all() and bias[:, 0].std() > 0.05
    scaled = augment_batch(x, AugmentConfig(**dict(only, contrast=0.2)), torch.Generator().manual_seed(0))
    gain = (scaled / x).flatten(1)
    assert torch.allclose(scaled, gain.median(1).values.view(-1, 1, 1, 1) * x, atol=1e-5)
    assert ((gain.median(1).values - 1).abs() <= 0.2 + 1e-6).all()


def _after_warp_and_jitter(seed: int) -> torch.Generator:
    """A generator advanced past augment_batch's warp and brightness/contrast draws (6 draws of B = 8)."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(6):
        torch.rand(8, generator=generator)
    return generator


def test_flips_follow_the_class_tables():
    tables = gtsrb_flip_tables()
    assert tables[0, 38] == 39 and tables[0, 39] == 38  # keep right <-> keep left
    assert (tables[:, 14] == -1).all()  # a flipped "STOP" is no sign
    x = batch(64)
    y = torch.tensor([38, 14] * 32)
    out, labels = flip_batch(x, y, tables, torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(out[y == 14], x[y == 14]) and torch.equal(labels[y == 14], y[y == 14])
    changed = labels != y
    assert changed.any() and bool((labels[changed] == 39).all())
    assert torch.equal(out[changed], x[changed].flip(3))  # 38's only flip is left-right
