import pytest
import torch

from genprior.augment import (
    DEFAULT_STRATEGY,
    DSA,
    DSAParams,
    adjust_color,
    cutout,
    rotate,
    scale,
    strategy_for,
    translate,
)
from genprior.errors import GenpriorError

FAMILIES = ["color", "crop", "cutout", "flip", "scale", "rotate"]


def images(n=4, channels=3, size=16, seed=0):
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("siamese", [False, True])
def test_gradients_reach_the_images(family, siamese):
    x = images().requires_grad_(True)
    dsa = DSA(family)
    out = dsa.siamese(x, generator=seeded())[0] if siamese else dsa(x, generator=seeded())
    (out * images(seed=1)).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("channels,size,n", [(1, 28, 1), (3, 32, 5)])
def test_output_keeps_shape_and_dtype(family, channels, size, n):
    for dtype in (torch.float32, torch.float64):
        x = images(n, channels, size).to(dtype)
        assert DSA(family)(x, generator=seeded()).shape == x.shape
        assert DSA(family)(x, generator=seeded()).dtype == dtype
        assert DSA(family).siamese(x, generator=seeded())[0].dtype == dtype


@pytest.mark.parametrize("strategy", FAMILIES + [DEFAULT_STRATEGY])
def test_siamese_applies_one_transform_to_every_batch(strategy):
    dsa = DSA(strategy)
    x = images(6)
    for seed in range(8):
        a, b = dsa.siamese(x, x.clone(), generator=seeded(seed))
        assert torch.equal(a, b)
        small, large = dsa.siamese(x[:3], x, generator=seeded(seed))
        assert torch.equal(small, large[:3])


@pytest.mark.parametrize("family", ["crop", "scale", "rotate", "color"])
def test_siamese_shares_the_draw_between_images_of_a_batch(family):
    x = images(1).expand(4, -1, -1, -1)
    out = DSA(family).siamese(x, generator=seeded())[0]
    assert all(torch.equal(out[0], out[i]) for i in range(1, 4))


def test_seed_decides_the_output():
    dsa = DSA(DEFAULT_STRATEGY)
    x = images(8)
    assert torch.equal(dsa(x, generator=seeded(3)), dsa(x, generator=seeded(3)))
    assert torch.equal(dsa.siamese(x, generator=seeded(3))[0], dsa.siamese(x, generator=seeded(3))[0])
    assert not torch.equal(DSA("scale")(x, generator=seeded(3)), DSA("scale")(x, generator=seeded(4)))


def test_global_rng_is_used_without_a_generator():
    x = images(8)
    torch.manual_seed(11)
    first = DSA()(x)
    torch.manual_seed(11)
    assert torch.equal(first, DSA()(x))


def test_every_family_of_the_strategy_gets_picked():
    dsa = DSA(DEFAULT_STRATEGY)
    assert {dsa._pick(seeded(s)) for s in range(100)} == set(FAMILIES)


def test_non_siamese_draws_per_image():
    x = images(1).expand(6, -1, -1, -1)
    out = DSA("scale")(x, generator=seeded())
    assert not any(torch.allclose(out[0], out[i]) for i in range(1, 6))


def test_flip_mirrors_whole_images():
    x = images(64)
    out = DSA("flip")(x, generator=seeded())
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(k != m for k, m in zip(kept, mirrored))
    assert 16 < sum(mirrored) < 48
    never = DSA("flip", DSAParams(flip_p=0.0))(x, generator=seeded())
    assert torch.equal(never, x)


def test_cutout_zeroes_a_square_of_half_the_side():
    x = images(2, size=32).abs() + 1
    inside = cutout(x, torch.tensor([16, 10]), torch.tensor([16, 20]), 16, 16)
    assert ((inside == 0).sum(dim=(1, 2, 3)) == 3 * 16 * 16).all()
    assert (inside[0, :, 8:24, 8:24] == 0).all()
    corner = cutout(x, torch.tensor([0, 32]), torch.tensor([0, 32]), 16, 16)
    assert ((corner == 0).sum(dim=(1, 2, 3)) == 3 * 8 * 8).all()


def test_random_cutout_is_a_clipped_box():
    x = images(32, size=32).abs() + 1
    out = DSA("cutout")(x, generator=seeded())
    for image in out:
        zero = image == 0
        assert torch.equal(zero, zero[:1].expand_as(zero))
        rows, cols = zero[0].any(dim=1), zero[0].any(dim=0)
        assert 8 <= rows.sum() <= 16 and 8 <= cols.sum() <= 16
        assert zero[0].sum() == rows.sum() * cols.sum()


def test_translate_moves_by_whole_pixels_with_zero_fill():
    x = images()
    none = torch.zeros(4, dtype=torch.long)
    assert torch.equal(translate(x, none, none), x)
    moved = translate(x, torch.full((4,), 1), torch.full((4,), -2))
    assert torch.equal(moved[:, :, 1:, :-2], x[:, :, :-1, 2:])
    assert (moved[:, :, 0] == 0).all() and (moved[..., -2:] == 0).all()


def test_random_crop_shifts_stay_within_an_eighth():
    x = images(8, size=16).abs() + 1
    out = DSA("crop")(x, generator=seeded())
    shifts = range(-2, 3)
    for o, i in zip(out, x):
        matches = [
            (dy, dx)
            for dy in shifts
            for dx in shifts
            if torch.equal(o, translate(i[None], torch.tensor([dy]), torch.tensor([dx]))[0])
        ]
        assert len(matches) == 1


def test_identity_warps_and_right_angle_rotation():
    x = images(2)
    ones = torch.ones(2)
    assert torch.allclose(scale(x, ones, ones), x, atol=1e-4)
    assert torch.allclose(rotate(x, torch.zeros(2)), x, atol=1e-4)
    assert torch.allclose(rotate(x, torch.full((2,), 90.0)), torch.rot90(x, -1, dims=(2, 3)), atol=1e-4)


def test_color_ops():
    x = images()
    zeros, ones = torch.zeros(4), torch.ones(4)
    assert torch.allclose(adjust_color(x, zeros, ones, ones), x, atol=1e-6)
    grey = adjust_color(x, zeros, zeros, ones)
    assert torch.allclose(grey, grey[:, :1].expand_as(grey), atol=1e-6)
    flat = adjust_color(x, zeros, ones, torch.full((4,), 0.5))
    assert torch.allclose(flat.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)
    assert torch.allclose(flat.std(dim=(1, 2, 3)), 0.5 * x.std(dim=(1, 2, 3)), atol=1e-5)


def test_brightness_shift_range():
    constant = torch.zeros(256, 3, 4, 4)
    out = DSA("color")(constant, generator=seeded())
    shift = out[:, 0, 0, 0]
    assert torch.equal(out, shift.view(-1, 1, 1, 1).expand_as(out))
    assert shift.min() >= -0.5 and shift.max() <= 0.5
    assert shift.min() < -0.4 and shift.max() > 0.4


def test_unknown_op_names_the_valid_ones():
    with pytest.raises(GenpriorError) as info:
        DSA("color_blur_flip")
    message = str(info.value)
    assert "blur" in message and "\n" not in message
    for op in FAMILIES:
        assert op in message


def test_siamese_rejects_mismatched_sizes():
    with pytest.raises(GenpriorError):
        DSA().siamese(images(size=16), images(size=32))


def test_strategy_for_digits_has_no_flip():
    assert "flip" not in strategy_for("mnist5k").split("_")
    assert "flip" not in strategy_for("svhn").split("_")
    assert "flip" in strategy_for("cifar10").split("_")
    assert "flip" in strategy_for("fashionmnist").split("_")


def test_composed_dsa_applies_colour_and_cutout_on_every_call():
    """IDC's evaluation augmentation: flip and colour always, one of the rest, cutout last."""
    x = images(16, size=16).abs() + 1  # no pixel is 0 before cutout
    out = DSA("color_cutout", DSAParams(cutout=0.25), compose=True)(x, generator=seeded())
    assert ((out == 0).flatten(1).any(dim=1)).all()  # every image lost a box
    kept = out != 0
    assert not torch.allclose(out[kept], x[kept])  # and every call recoloured the rest
    single = DSA("color_cutout", DSAParams(cutout=0.25))(x, generator=seeded())
    assert not (((single == 0).flatten(1).any(dim=1)).all() and not torch.allclose(single[single != 0], x[single != 0]))
    composed = DSA("crop_scale_rotate_flip_color", compose=True)
    assert composed.single_ops == ("crop", "scale", "rotate")
    assert composed.strategy.endswith("(composed: flip, color, one of crop/scale/rotate)")
    # one geometric op per call: without flip, colour or cutout, a composed call is the single op
    # DSA's single mode picks under the same draws
    geo = DSA("scale_rotate", compose=True)
    g1, g2 = seeded(3), seeded(3)
    assert torch.equal(geo(x, generator=g1), DSA("scale_rotate")(x, generator=g2))
    with pytest.raises(GenpriorError, match="without compose"):
        composed.siamese(x, generator=seeded())


def test_crop_augment_is_a_resized_crop_and_flip_without_colour():
    from genprior.augment import ImageNetAugment

    x = images(8, channels=1, size=16)
    crop = ImageNetAugment((0.5,), (0.5,), jitter=0.0, lighting=0.0)
    assert crop.strategy == "crop: rrc 0.5-1, flip"
    out = crop(x, generator=seeded())
    assert out.shape == x.shape and not torch.allclose(out, x)
    full = ImageNetAugment((0.5,), (0.5,), scale=(1.0, 1.0), jitter=0.0, lighting=0.0)(x, generator=seeded())
    # a crop of the whole area fits only at aspect 1, which no draw hits: torchvision's fallback,
    # the whole image, mirrored or not
    for a, b in zip(full, x):
        assert torch.allclose(a, b, atol=1e-5) or torch.allclose(a, b.flip(-1), atol=1e-5)


def test_imagenet_jitter_does_not_clamp():
    from genprior.augment import ImageNetAugment

    x = torch.full((64, 3, 8, 8), 0.9)  # normalised = pixels (mean 0, std 1)
    x[:, 0] = 0.2
    out = ImageNetAugment((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), lighting=0.0)(x, generator=seeded())
    assert out.max() > 1.0  # brightness x1.4 of 0.9 is not clamped to 1
