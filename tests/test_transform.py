import pytest
import torch

from proxyaug import MaskBank, ProxyTransform
from proxyaug import functional as F


@pytest.fixture
def bank(device):
    bank = MaskBank(6, resolution=(4, 4), device=device)
    bank.put(torch.tensor([1, 3]), torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0)))
    return bank


def _rand(*shape, device, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)).to(device)


def test_unmapped_samples_pass_through_untouched(bank, device):
    x = _rand(4, 3, 16, 16, device=device)
    out = ProxyTransform(bank, mode="black", threshold=0.3).replace(x, torch.tensor([0, 1, 2, 3]))
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    assert not torch.equal(out[1], x[1]) and not torch.equal(out[3], x[3])


def test_equals_functional_on_bank_maps(bank, device):
    x = _rand(2, 3, 16, 16, device=device)
    idx = torch.tensor([3, 1])
    out = ProxyTransform(bank, mode="blend", threshold=0.5, weight=0.4).replace(x, idx)
    maps, _ = bank.get(idx)
    torch.testing.assert_close(out, F.replace(x, maps, "blend", 0.5, 0.4), rtol=0, atol=0)


def test_p_zero_identity_and_replayed_params(bank, device):
    x = _rand(2, 3, 8, 8, device=device)
    idx = torch.tensor([1, 3])
    assert ProxyTransform(bank, p=0.0).replace(x, idx) is x
    proxy = ProxyTransform(bank, mode="mean", threshold=0.2, p=0.5)
    params = proxy.forward_parameters(2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(proxy.replace(x, idx, params=params), proxy.replace(x, idx, params=params))


def test_bank_without_maps_yet_is_identity():
    x = torch.rand(2, 3, 8, 8)
    assert ProxyTransform(MaskBank(4, resolution=None)).replace(x, torch.tensor([0, 3])) is x
    with pytest.raises(IndexError, match="out of range"):
        ProxyTransform(MaskBank(4, resolution=None))(x, torch.tensor([0, 4]))


def test_idx_accepts_lists_and_transform_state(bank, device):
    proxy = ProxyTransform(bank)
    out = proxy.replace(_rand(2, 3, 8, 8, device=device), [1, 3])
    assert out.shape == (2, 3, 8, 8) and out.device.type == device.type
    assert set(proxy.state_dict()) == {"bank.maps", "bank.present"}
    assert "mode='blend'" in repr(proxy)


@pytest.mark.parametrize(
    "idx, exc, match",
    [
        (torch.tensor([0, 1, 2]), ValueError, r"idx has 3 entries but the batch has 2 samples"),
        (torch.tensor([0.0, 1.0]), TypeError, r"idx must hold integer sample indices"),
        (torch.tensor([0, 6]), IndexError, r"idx contains 6, out of range for a bank of 6 samples; expected indices in \[0, 5\]"),
        (torch.tensor([[0, 1]]), ValueError, r"idx must be 1-D"),
        ("ab", TypeError, r"idx must be a 1-D tensor"),
    ],
)
def test_bad_idx(bank, device, idx, exc, match):
    with pytest.raises(exc, match=match):
        ProxyTransform(bank)(torch.rand(2, 3, 8, 8, device=device), idx)


def test_bad_settings_and_batch(bank, device):
    with pytest.raises(ValueError, match=r"mode='negative' is not supported"):
        ProxyTransform(bank, mode="negative")
    with pytest.raises(ValueError, match=r"p=1.2 is out of range"):
        ProxyTransform(bank, p=1.2)
    with pytest.raises(TypeError, match=r"bank must be a proxyaug.MaskBank"):
        ProxyTransform(torch.zeros(3))
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\)"):
        ProxyTransform(bank)(torch.rand(3, 8, 8, device=device), torch.tensor([0, 1, 2]))


def test_cuda_device_mismatch_and_to(cuda_only):
    bank = MaskBank(6, resolution=(4, 4))
    bank.put(torch.tensor([1, 3]), torch.rand(2, 4, 4))
    proxy = ProxyTransform(bank)
    x = torch.rand(2, 3, 8, 8, device=cuda_only)
    with pytest.raises(RuntimeError, match=r"x is on cuda:0 but the bank is on cpu"):
        proxy(x, torch.tensor([1, 3]))
    proxy.to("cuda")
    assert bank.device.type == "cuda" and proxy.replace(x, torch.tensor([1, 3])).is_cuda


def test_first_float_batch_is_range_checked_once(bank, device):
    proxy = ProxyTransform(bank, mode="black")
    with pytest.raises(ValueError, match=r"the values of x lie in \[.*\]; expected float images in \[0, 1\]\. They look normalised"):
        proxy(torch.rand(2, 3, 8, 8, device=device) * 4 - 2, torch.tensor([0, 1]))
    proxy(torch.rand(2, 3, 8, 8, device=device), torch.tensor([0, 1]))  # a good batch passes, and ends the checks
    assert proxy.check_range is False
    proxy(torch.rand(2, 3, 8, 8, device=device) * 255, torch.tensor([0, 1]))  # later batches are not checked: no host sync
    unchecked = ProxyTransform(bank, check_range=False)
    unchecked(torch.rand(2, 3, 8, 8, device=device) * 255, torch.tensor([0, 1]))
    ProxyTransform(bank)(torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8, device=device), torch.tensor([0, 1]))


@pytest.mark.parametrize("mode", F.MODES)
def test_per_batch_path_does_not_synchronise_on_cuda(device, no_host_sync, mode):
    import proxyaug as pa

    bank = MaskBank(8, resolution=(4, 4), device=device)
    bank.put(torch.tensor([1, 3]), torch.rand(2, 4, 4))
    ds = pa.ProxyDataset(torch.utils.data.TensorDataset(torch.rand(8, 3, 8, 8), torch.zeros(8, dtype=torch.long)), bank)
    proxy = ProxyTransform(bank, mode=mode, p=0.5)
    x, logits = torch.rand(4, 3, 8, 8, device=device), torch.rand(4, 2, device=device)
    idx, labels = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 1, 1])  # CPU, pageable, as a loader yields them
    proxy(x, idx)  # warm-up: first-use allocations, and the one range check of the first batch
    ds.observe(idx, logits, labels)
    with no_host_sync():
        out = proxy.replace(x, idx)
        ds.observe(idx, logits, labels)
        bank.get(idx)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            proxy(x, idx)
    assert out.is_cuda


@pytest.mark.parametrize("mode", F.MODES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_and_reduced_precision_batches(bank, device, mode, dtype):
    x, idx = _rand(4, 3, 16, 16, device=device), torch.tensor([0, 1, 2, 3])
    proxy = ProxyTransform(bank, mode=mode, threshold=0.3)
    expect = proxy.replace(x, idx)
    with torch.autocast(device.type, dtype=dtype):  # float32 images in an autocast region: float32 out
        out = proxy.replace(x, idx)
    assert out.dtype == torch.float32
    # only the blur's convolution runs in the lower precision under autocast
    torch.testing.assert_close(out, expect, rtol=0, atol=2e-2 if mode == "blur" else 0)
    low = proxy.replace(x.to(dtype), idx)  # images already in the lower precision stay in it
    assert low.dtype == dtype and low.device.type == device.type
    torch.testing.assert_close(low.float(), expect, rtol=0, atol=2e-2)
    assert torch.equal(low[0].float(), x[0].to(dtype).float())  # an unmapped sample passes through


@pytest.mark.parametrize("mode", F.MODES)
def test_channels_last_batches_keep_their_layout_and_values(bank, device, mode):
    x, idx = _rand(4, 3, 16, 16, device=device), torch.tensor([0, 1, 2, 3])
    proxy = ProxyTransform(bank, mode=mode, threshold=0.3)
    out = proxy.replace(x.contiguous(memory_format=torch.channels_last), idx)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, proxy.replace(x, idx), rtol=0, atol=1e-6)


# -- forward_parameters takes Kornia's batch_shape; repr; validate_args ----------------------------
def test_forward_parameters_takes_the_batch_shape_as_kornia_does(bank, device):
    proxy = ProxyTransform(bank, p=0.5)
    draw = lambda shape: proxy.forward_parameters(shape, generator=torch.Generator().manual_seed(3))["apply"]  # noqa: E731
    x = torch.rand(5, 3, 8, 8, device=device)
    assert draw(x.shape).shape == (5,) and torch.equal(draw(x.shape), draw(5))  # an int B still works
    assert torch.equal(draw((5, 3, 8, 8)), draw([5, 3, 8, 8]))
    assert draw(x[0].shape).shape == (1,)  # (C, H, W): one image
    assert proxy.forward_parameters(x.shape, device="meta")["apply"].device.type == "meta"
    with pytest.raises(ValueError, match=r"batch_shape=\(3, 8\) is not valid; expected the images' shape \(B, C, H, W\)"):
        proxy.forward_parameters((3, 8))
    with pytest.raises(TypeError):
        proxy.forward_parameters(x.shape, "cpu")  # device and generator are keyword-only


def test_repr_names_every_setting(bank):
    text = repr(ProxyTransform(bank, mode="blur", blur_sigma=2.0))
    assert "mode='blur', threshold=0.85, weight=0.1, p=1.0, blur_sigma=2.0" in text and "validate_args" not in text
    assert "blur_sigma=None, validate_args=False" in repr(ProxyTransform(bank, validate_args=False))


def test_validate_args_false_skips_the_host_checks_only(bank, device):
    proxy = ProxyTransform(bank, mode="black", validate_args=False)
    proxy(torch.rand(2, 3, 8, 8, device=device) * 255, torch.tensor([0, 1]))  # no range check
    assert proxy.check_range is True and proxy.validate_args is False
    if device.type == "cpu":  # on CUDA a device-side assert, which would end the process' CUDA context
        with pytest.raises(IndexError, match=r"index out of range"):
            proxy(torch.rand(2, 3, 8, 8, device=device), torch.tensor([0, 6]))  # caught by the indexing kernel alone
    with pytest.raises(ValueError, match=r"idx has 3 entries but the batch has 2 samples"):
        proxy(torch.rand(2, 3, 8, 8, device=device), torch.tensor([0, 1, 2]))  # metadata is always checked
    with pytest.raises(TypeError, match=r"idx must hold integer sample indices"):
        proxy(torch.rand(2, 3, 8, 8, device=device), torch.tensor([0.0, 1.0]))


def test_defaults_are_the_functional_ones():
    import inspect

    params = inspect.signature(ProxyTransform).parameters
    assert params["mode"].default == F.DEFAULT_MODE == "blend"
    assert params["threshold"].default == F.DEFAULT_THRESHOLD == 0.85
    assert params["weight"].default == F.DEFAULT_WEIGHT == 0.1
    assert params["p"].default == F.DEFAULT_P == 1.0
