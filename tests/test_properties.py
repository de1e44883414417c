"""Properties of the per-batch path that must hold for every input (hypothesis)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import proxyaug as pa
from proxyaug import functional as F
from proxyaug.selection import choose

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def _thesis_subset(indices, fraction, seed):
    """The thesis rule's draw: ``fraction`` of the wrong ``indices`` at random from ``seed``."""
    return choose("wrong", indices, torch.ones(indices.numel(), dtype=torch.bool), None, fraction, seed)


@st.composite
def batches(draw):
    """Images in [0, 1] of random batch, channels and size, with low-resolution maps."""
    b = draw(st.integers(1, 4))
    c = draw(st.sampled_from([1, 3]))
    h, w = draw(st.integers(2, 20)), draw(st.integers(2, 20))
    mh, mw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g)
    if draw(st.booleans()):  # saturated pixels
        x = (x > 0.5).float()
    maps = torch.rand(b, mh, mw, generator=g) * draw(st.sampled_from([1.0, 1e-3, 1e3]))
    return x, maps


modes = st.sampled_from(F.MODES)
unit = st.floats(0.0, 1.0, allow_nan=False)
dtypes = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.uint8])


@SETTINGS
@given(batches(), modes, unit, unit, unit, dtypes)
def test_shape_dtype_device_preserved(case, mode, threshold, weight, p, dtype):
    x, maps = case
    x = (x * 255).round().to(dtype) if dtype == torch.uint8 else x.to(dtype)
    out = F.replace(x, maps, mode, threshold, weight, p, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device


@SETTINGS
@given(batches(), modes, unit, unit)
def test_identities(case, mode, threshold, weight):
    x, maps = case
    assert torch.equal(F.replace(x, maps, mode, threshold, weight, p=0.0), x)
    assert torch.equal(F.replace(x, torch.zeros_like(maps), mode, threshold, weight), x)
    assert torch.equal(F.replace(x, maps, mode, 1.0, weight), x)
    present = torch.zeros(x.shape[0], dtype=torch.bool)
    assert torch.equal(F.replace(x, maps, mode, threshold, weight, present=present), x)


@SETTINGS
@given(batches(), modes, unit, unit)
def test_outputs_stay_in_unit_range(case, mode, threshold, weight):
    x, maps = case
    out = F.replace(x, maps, mode, threshold, weight)
    assert out.min() >= 0 and out.max() <= 1


@SETTINGS
@given(batches(), unit, st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_blend_moves_pixels_monotonically_toward_zero(case, threshold, w1, w2):
    x, maps = case
    lo, hi = sorted((w1, w2))
    a = F.replace(x, maps, "blend", threshold, lo)
    b = F.replace(x, maps, "blend", threshold, hi)
    assert (b <= a).all() and (a <= x).all()


@SETTINGS
@given(batches(), modes, unit, st.floats(0.01, 0.99), st.integers(0, 2**31 - 1))
def test_same_seed_same_output(case, mode, threshold, p, seed):
    x, maps = case
    a = F.replace(x, maps, mode, threshold, 0.5, p, generator=torch.Generator().manual_seed(seed))
    b = F.replace(x, maps, mode, threshold, 0.5, p, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)


@SETTINGS
@given(st.integers(1, 60), st.floats(0.01, 1.0), st.integers(0, 2**31 - 1))
def test_same_seed_same_selection(n, fraction, seed):
    wrong = torch.randperm(200, generator=torch.Generator().manual_seed(n))[:n].sort().values
    a, b = _thesis_subset(wrong, fraction, seed), _thesis_subset(wrong, fraction, seed)
    assert torch.equal(a, b) and a.numel() == max(1, int(fraction * n + 0.5))
    assert set(a.tolist()) <= set(wrong.tolist()) and torch.equal(a, a.sort().values)


def test_refresh_with_the_same_seed_is_reproducible(model, base):
    a, b = pa.ProxyDataset(base), pa.ProxyDataset(base)
    ra, rb = pa.refresh(model, a, seed=3), pa.refresh(model, b, seed=3)
    assert torch.equal(ra.indices, rb.indices) and torch.equal(a.bank.maps, b.bank.maps)


@pytest.mark.parametrize("size", [(16, 16), (24, 20), (9, 31)])
def test_batches_of_other_sizes_than_earlier_ones(model, base, size):
    ds = pa.ProxyDataset(base)
    pa.refresh(model, ds, fraction=1.0)
    proxy = pa.ProxyTransform(ds.bank, mode="black", threshold=0.5)
    idx = ds.bank.present.nonzero().flatten()[:4]
    x = torch.rand(len(idx), 3, *size)
    out = proxy.replace(x, idx)
    assert out.shape == x.shape and (out != x).flatten(1).any(1).all()


@SETTINGS
@given(batches(), modes, unit, st.integers(0, 2**31 - 1))
def test_every_input_form_gives_the_same_images(case, mode, threshold, seed):
    x, maps = case
    b = x.shape[0]
    bank = pa.MaskBank(b + 1, resolution=tuple(maps.shape[-2:]))
    bank.put(torch.arange(b), pa.functional.normalize_maps(maps.clamp_min(0)))
    idx = torch.randperm(b + 1, generator=torch.Generator().manual_seed(seed))[:b]
    proxy = pa.ProxyTransform(bank, mode=mode, threshold=threshold)
    expect = proxy.replace(x, idx)
    assert torch.equal(proxy((x, idx))[0], expect) and torch.equal(proxy([x, idx, idx])[0], expect)
    assert torch.equal(proxy({"image": x, "idx": idx})["image"], expect)
    assert torch.equal(proxy(x, idx.clone(), idx)[0], expect) and torch.equal(proxy(x, idx)[0], expect)
    i = seed % b  # one (C, H, W) image: its row of the batch (up to the last bit: convolutions of 1 and B images differ)
    torch.testing.assert_close(proxy.replace(x[i], idx[i]), expect[i], rtol=0, atol=1e-6)
    assert torch.equal(proxy.replace(x[i], int(idx[i])), proxy.replace(x[i], idx[i]))
