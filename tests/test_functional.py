import math

import pytest
import torch

from proxyaug import functional as F


def _case(b=3, c=3, size=8, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, size, size, generator=g).to(device), torch.rand(b, 4, 4, generator=g).to(device)


def _upsampled(maps, size):
    # hand computation of the documented semantics: bilinear (align_corners=False), ReLU, min-max
    m = torch.nn.functional.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False).clamp_min(0)
    lo = m.amin(dim=(2, 3), keepdim=True)
    hi = m.amax(dim=(2, 3), keepdim=True)
    return (m - lo) / (hi - lo + 1e-7)


@pytest.mark.parametrize("mode", F.MODES)
def test_each_mode_matches_hand_computation(mode, device, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # both sides' convolutions in full float32
    x, maps = _case(device=device)
    tau, lam = 0.6, 0.3
    m = _upsampled(maps, (8, 8))
    sel = m > tau
    if mode == "blend":
        expect = torch.where(sel, (1 - lam * m) * x, x)
    elif mode == "black":
        expect = torch.where(sel, torch.zeros_like(x), x)
    elif mode == "mean":
        expect = torch.where(sel, x.mean(dim=(2, 3), keepdim=True).expand_as(x), x)
    else:
        sigma, r = 1.5, 5  # radius ceil(3 * sigma)
        k1 = torch.exp(-torch.arange(-r, r + 1.0, device=device) ** 2 / (2 * sigma**2))
        k2 = torch.outer(k1, k1) / k1.sum() ** 2
        padded = torch.nn.functional.pad(x, (r, r, r, r), mode="reflect")
        blurred = torch.nn.functional.conv2d(padded, k2.expand(3, 1, -1, -1), groups=3)
        expect = torch.where(sel, blurred, x)
    out = F.replace(x, maps, mode=mode, threshold=tau, weight=lam, blur_sigma=1.5 if mode == "blur" else None)
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-6)
    assert sel.any() and (~sel).any()  # the case exercises both branches


def test_blend_by_hand_on_a_single_pixel():
    x = torch.full((1, 1, 2, 2), 0.8)
    maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # upsampled to itself: only pixel (0, 0) is 1
    out = F.replace(x, maps, "blend", threshold=0.85, weight=0.1)
    assert out[0, 0, 0, 0].item() == pytest.approx(0.8 * (1 - 0.1 * 1.0))
    assert torch.equal(out.flatten()[1:], x.flatten()[1:])


def test_p_zero_is_identity_and_threshold_one_changes_nothing(device):
    x, maps = _case(device=device)
    assert F.replace(x, maps, "black", p=0.0) is x
    assert torch.equal(F.replace(x, maps, "black", threshold=1.0), x)


def test_all_zero_maps_change_nothing(device):
    x, _ = _case(device=device)
    assert torch.equal(F.replace(x, torch.zeros(3, 4, 4, device=device), "black", threshold=0.0), x)


def test_present_false_samples_unchanged(device):
    x, maps = _case(device=device)
    out = F.replace(x, maps, "black", threshold=0.2, present=torch.tensor([True, False, True], device=device))
    assert torch.equal(out[1], x[1])
    assert not torch.equal(out[0], x[0])


def test_replayed_params_give_equal_output_and_p_selects_samples(device):
    x, maps = _case(b=64, device=device)
    g = torch.Generator().manual_seed(1)
    params = F.sample_params(64, p=0.5, device=device, generator=g)
    a = F.replace(x, maps, "black", threshold=0.3, params=params)
    b = F.replace(x, maps, "black", threshold=0.3, params=params)
    assert torch.equal(a, b)
    changed = (a != x).flatten(1).any(1)
    assert torch.equal(changed, params["apply"])  # every applied sample has some pixel above 0.3
    assert 10 < int(params["apply"].sum()) < 54


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_shape_dtype_device_preserved(dtype, device):
    x, maps = _case(device=device)
    out = F.replace(x.to(dtype), maps, "blend", threshold=0.5)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device


@pytest.mark.parametrize("mode", F.MODES)
def test_uint8_is_computed_in_float_and_rounded(mode, device):
    x, maps = _case(device=device)
    x8 = (x * 255).round().to(torch.uint8)
    out = F.replace(x8, maps, mode, threshold=0.5, weight=0.5, blur_sigma=1.0)
    expect = F.replace(x8.float(), maps, mode, threshold=0.5, weight=0.5, blur_sigma=1.0).round().to(torch.uint8)
    assert out.dtype == torch.uint8 and torch.equal(out, expect)
    unselected = F.upsample_maps(maps, (8, 8)).le(0.5).expand_as(x8)
    assert torch.equal(out[unselected], x8[unselected])


def test_non_finite_maps_never_reach_the_image(device):
    x, maps = _case(device=device)
    maps[0, 1, 1] = float("nan")
    maps[1, 2, 2] = float("inf")
    maps[2] = float("-inf")
    for mode in F.MODES:
        out = F.replace(x, maps, mode, threshold=0.3)
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert torch.equal(F.replace(x, maps, "black", threshold=0.0)[2], x[2])  # an all-inf map is no evidence


def test_different_image_sizes_and_aspect():
    x = torch.rand(2, 3, 20, 12)
    out = F.replace(x, torch.rand(2, 3, 3), "mean", threshold=0.5)
    assert out.shape == x.shape


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(mode="sepia"), ValueError, r"mode='sepia' is not supported; expected one of 'blend'"),
        (dict(threshold=1.5), ValueError, r"threshold=1.5 is out of range; expected a number in \[0, 1\]"),
        (dict(weight=-0.1), ValueError, r"weight=-0.1 is out of range"),
        (dict(p=2), ValueError, r"p=2.0 is out of range"),
        (dict(threshold="high"), TypeError, r"threshold must be a number"),
    ],
)
def test_bad_settings(kwargs, exc, match, device):
    x, maps = _case(device=device)
    with pytest.raises(exc, match=match):
        F.replace(x, maps, **kwargs)


def test_bad_images():
    _, maps = _case()
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\); got shape \(3, 8, 8\)"):
        F.replace(torch.rand(3, 8, 8), maps)
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor.* or a uint8 tensor in \[0, 255\]; got dtype torch.int32"):
        F.replace(torch.zeros(3, 3, 8, 8, dtype=torch.int32), maps)
    with pytest.raises(ValueError, match=r"maps must have shape \(B, h, w\) with B=2"):
        F.replace(torch.rand(2, 3, 8, 8), maps)


def test_sample_params_from_a_cpu_generator_copies_without_blocking(copies):
    # "meta" stands in for "cuda": draws on the CPU generator, the result on another device
    params = F.sample_params(4, p=0.5, device="meta", generator=torch.Generator().manual_seed(0))
    assert params["apply"].device.type == "meta"
    assert copies and all(copies), "the host-to-device copy in sample_params() was blocking"


def test_defaults_are_written_once():
    import inspect

    params = inspect.signature(F.replace).parameters
    assert (params["mode"].default, params["threshold"].default, params["weight"].default, params["p"].default) == (
        F.DEFAULT_MODE, F.DEFAULT_THRESHOLD, F.DEFAULT_WEIGHT, F.DEFAULT_P,
    ) == ("blend", 0.85, 0.1, 1.0)
    assert inspect.signature(F.sample_params).parameters["p"].default == F.DEFAULT_P


def test_modes_are_a_registry_one_function_and_one_line_each(monkeypatch):
    assert F.MODES == ("blend", "black", "mean", "blur") and isinstance(F.MODES, tuple)
    x, maps = _case()
    # a new mode: one function and one entry; MODES follows the registry
    monkeypatch.setitem(F._FILLS, "white", lambda x, m, *, weight, blur_sigma: x.new_ones(()))
    monkeypatch.setattr(F, "MODES", tuple(F._FILLS))
    out = F.replace(x, maps, "white", threshold=0.6)
    sel = _upsampled(maps, (8, 8)) > 0.6
    assert torch.equal(out, torch.where(sel, torch.ones_like(x), x))


# -- the blur: exact products, the reduced path at 192 px and more, cached matrices -----------------
def _kornia_blur(x, sigma):
    kornia = pytest.importorskip("kornia")
    r = max(1, min(math.ceil(3 * sigma), x.shape[-2] - 1, x.shape[-1] - 1))
    return kornia.filters.gaussian_blur2d(x, (2 * r + 1, 2 * r + 1), (sigma, sigma), border_type="reflect")


def _smooth(n, size, device):
    """Random images with structure at 4 scales, min-max scaled to [0, 1]."""
    g = torch.Generator().manual_seed(0)
    parts = [torch.nn.functional.interpolate(torch.rand(n, 3, c, c, generator=g), size=(size, size), mode="bicubic", align_corners=False) for c in (4, 8, 16, 32)]
    x = sum(parts)
    x = (x - x.amin(dim=(1, 2, 3), keepdim=True)) / (x.amax(dim=(1, 2, 3), keepdim=True) - x.amin(dim=(1, 2, 3), keepdim=True))
    return x.to(device)


@pytest.mark.parametrize("shape, sigma", [((2, 3, 8, 8), 1.5), ((2, 3, 30, 17), 2.5), ((1, 1, 8, 8), 5.0), ((2, 3, 224, 224), 7.0), ((1, 2, 200, 150), 6.0)])
def test_exact_blur_is_kornias_up_to_rounding(shape, sigma, device):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device)
    torch.testing.assert_close(F.gaussian_blur(x, sigma, exact=True), _kornia_blur(x, sigma), rtol=0, atol=1e-12)
    small = x.float()
    torch.testing.assert_close(F.gaussian_blur(small, sigma, exact=True), _kornia_blur(small, sigma), rtol=0, atol=1e-6)


def test_fast_blur_is_within_the_documented_difference_of_the_exact_one(device):
    # the docstring's figures at 224 px, sigma 7 (half resolution): smooth images 0.0010 (mean 0.0002),
    # sharp patterns 0.0032, white noise 0.0043 (mean 0.0007); a band at the border checks the reflect padding
    noise = torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(5)).to(device)
    border = torch.zeros(2, 3, 224, 224, device=device)
    border[..., :3] = 1.0  # a bright band along the left edge: reflect padding doubles it
    border[1, :, :, 100:] = 1.0
    for x, most, mean in [(_smooth(8, 224, device), 0.0012, 2e-4), (noise, 0.0045, 7e-4), (border, 0.0035, 2e-4)]:
        diff = (F.gaussian_blur(x, 7.0) - F.gaussian_blur(x, 7.0, exact=True)).abs()
        assert diff.max() <= most and diff.mean() <= mean, (float(diff.max()), float(diff.mean()))
        assert diff.max() > 0  # the reduced path ran
    # by hand: reflect mirrors columns 1, 2 to -1, -2, so column 0 sums the taps t = -2..2 (zero padding: 0..2)
    k = torch.exp(-torch.arange(-21.0, 22.0) ** 2 / (2 * 7.0**2))
    by_hand = float(k[19:24].sum() / k.sum())
    assert by_hand == pytest.approx(float(F.gaussian_blur(border[:1], 7.0, exact=True)[0, 0, 112, 0]), abs=1e-6)
    assert by_hand == pytest.approx(float(F.gaussian_blur(border[:1], 7.0)[0, 0, 112, 0]), abs=0.0035)


def test_fast_blur_on_upscaled_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    d = torch.tensor(datasets.load_digits().images[:32], dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(d, size=(224, 224), mode="bilinear", align_corners=False).clamp(0, 1)
    diff = (F.gaussian_blur(x, 7.0) - F.gaussian_blur(x, 7.0, exact=True)).abs()
    assert diff.max() <= 0.0012 and diff.mean() <= 2e-4


@pytest.mark.parametrize("size", [28, 32, 128, 191])
def test_images_under_192_px_are_blurred_exactly_at_the_default_sigma(size, device):
    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    sigma = F.default_blur_sigma((size, size))
    assert torch.equal(F.gaussian_blur(x, sigma), F.gaussian_blur(x, sigma, exact=True))
    if size == 128:  # and a sigma under 6 at any size
        x = torch.nn.functional.interpolate(x, size=(256, 256))
        assert torch.equal(F.gaussian_blur(x, 5.9), F.gaussian_blur(x, 5.9, exact=True))


@pytest.mark.parametrize("size, sigma", [(8, 1.0), (28, 1.0), (224, 7.0), (192, 6.0), (251, 7.5), (200, 60.0)])
def test_a_constant_image_stays_constant(size, sigma, device):
    for exact in (False, True):
        out = F.gaussian_blur(torch.full((2, 3, size, size), 0.3, device=device), sigma, exact=exact)
        torch.testing.assert_close(out, torch.full_like(out, 0.3), rtol=0, atol=1e-6)


def test_blur_matrices_are_cached_per_size_sigma_dtype_and_device(device):
    F._MATRICES.clear()
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    first = F.gaussian_blur(x.float(), 1.5)
    assert len(F._MATRICES) == 1 and F.gaussian_blur(x.float(), 1.5).equal(first)  # a hit, no new matrix
    # float64 after float32 on the same size and sigma: its own matrix, at float64's precision
    torch.testing.assert_close(F.gaussian_blur(x, 1.5), _kornia_blur(x, 1.5), rtol=0, atol=1e-12)
    moved = F.gaussian_blur(x.float().to(device), 1.5)
    assert moved.device == x.float().to(device).device and torch.allclose(moved.cpu(), first, atol=1e-6)
    assert F.gaussian_blur(x.float().to("meta"), 1.5).device.type == "meta"
    for (n, sigma, radius, dtype, where), matrix in F._MATRICES.items():
        assert (matrix.shape, matrix.dtype, matrix.device) == ((n, n), dtype, where)
    assert {(k[3], k[4].type) for k in F._MATRICES} >= {(torch.float32, "cpu"), (torch.float64, "cpu"), (torch.float32, "meta")}
    assert len({k[3:] for k in F._MATRICES}) == len(F._MATRICES)  # one matrix per dtype and device here
    for i in range(F._MATRICES_KEPT + 4):  # a bounded cache
        F.gaussian_blur(x[..., : 4 + i % 8, :], 1.0 + i)
    assert len(F._MATRICES) <= F._MATRICES_KEPT


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.uint8])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_reduced_blur_keeps_dtype_and_layout(dtype, channels_last, device):
    x = _smooth(2, 192, device)
    maps = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(3)).to(device)
    low = (x * 255).round().to(dtype) if dtype == torch.uint8 else x.to(dtype)
    low = low.contiguous(memory_format=torch.channels_last) if channels_last else low
    out = F.replace(low, maps, "blur", threshold=0.3)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    expect = F.replace(low.float(), maps, "blur", threshold=0.3)  # blurred in float32 in both
    torch.testing.assert_close(out.float(), expect.round() if dtype == torch.uint8 else expect.to(dtype).float(), rtol=0, atol=0)
