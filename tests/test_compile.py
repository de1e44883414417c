"""The per-batch path compiles whole: one graph, no break (``torch._dynamo.explain``), the eager result."""

import pytest
import torch

from proxyaug import MaskBank, ProxyTransform
from proxyaug import functional as F

torch_dynamo = pytest.importorskip("torch._dynamo")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _case(device):
    bank = MaskBank(8, resolution=(4, 4), device=device)
    bank.put(torch.tensor([1, 3, 6]), torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0)))
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)).to(device)
    return bank, x, torch.tensor([0, 1, 3, 6])  # idx on the CPU, as a loader yields it


def _assert_one_graph(explain):
    reasons = [str(b.reason).splitlines()[0] for b in explain.break_reasons]
    assert (explain.graph_count, explain.graph_break_count) == (1, 0), reasons


@pytest.mark.parametrize("mode", ["blend", "blur", "mean"])
@pytest.mark.parametrize("p, replay", [(1.0, False), (0.5, False), (0.5, True)], ids=["p1", "p0.5", "p0.5-params"])
def test_transform_is_one_graph_with_no_break(mode, p, replay, device):
    bank, x, idx = _case(device)
    proxy = ProxyTransform(bank, mode=mode, threshold=0.5, p=p)  # validate_args and check_range on: the defaults
    kwargs = {"params": proxy.forward_parameters(x.shape, device=device, generator=torch.Generator().manual_seed(2))} if replay else {}
    _assert_one_graph(torch._dynamo.explain(proxy)(x, idx, **kwargs))


@pytest.mark.parametrize("batch", ["tuple", "dict", "single"])
def test_composed_inputs_are_one_graph_too(batch, device):
    bank, x, idx = _case(device)
    proxy = ProxyTransform(bank, mode="black", threshold=0.5)
    inputs = {"tuple": ((x, idx.clone(), idx),), "dict": ({"image": x, "idx": idx, "label": idx.clone()},), "single": (x[1], 3)}[batch]
    _assert_one_graph(torch._dynamo.explain(proxy)(*inputs))


@pytest.mark.parametrize("mode", ["blend", "blur"])
@pytest.mark.parametrize("p, replay", [(1.0, False), (0.5, False), (0.5, True)], ids=["p1", "p0.5", "p0.5-params"])
def test_functional_replace_is_one_graph_with_no_break(mode, p, replay, device):
    bank, x, idx = _case(device)
    maps, present = bank.get(idx)
    params = F.sample_params(4, p, device=device, generator=torch.Generator().manual_seed(2)) if replay else None
    _assert_one_graph(torch._dynamo.explain(F.replace)(x, maps, mode, 0.5, 0.1, p, present=present, params=params))


@pytest.mark.parametrize("mode", F.MODES)
def test_compiled_transform_equals_eager_and_eager_checks_still_run(mode, device):
    bank, x, idx = _case(device)
    proxy = ProxyTransform(bank, mode=mode, threshold=0.5, weight=0.4, p=0.5)
    params = proxy.forward_parameters(x.shape, device=device, generator=torch.Generator().manual_seed(2))
    compiled = torch.compile(proxy, backend="eager", fullgraph=True)  # fullgraph: a break raises
    out, back = compiled(x, idx, params=params)  # (x', idx): structure in, structure out
    assert torch.equal(out, proxy.replace(x, idx, params=params)) and back is idx
    with pytest.raises(IndexError, match=r"idx contains 8, out of range for a bank of 8 samples"):
        proxy(x, torch.tensor([0, 1, 3, 8]))  # eager, validate_args on: the host checks run


def test_host_checks_are_skipped_while_compiling_and_check_range_is_kept(device):
    bank, x, idx = _case(device)
    proxy = ProxyTransform(bank, mode="black")
    compiled = torch.compile(proxy, backend="eager", fullgraph=True)
    compiled(x * 255, idx)  # no range check inside the graph (it would need a host sync) ...
    assert proxy.check_range is True  # ... so the first eager batch is still checked
    with pytest.raises(ValueError, match=r"the values of x lie in"):
        proxy(x * 255, idx)


def test_transform_on_the_device_with_a_cpu_idx_is_one_graph(device):
    bank, x, idx = _case(device)
    proxy = ProxyTransform(bank, mode="blend", threshold=0.5, p=0.5)
    _assert_one_graph(torch._dynamo.explain(proxy)(x, idx))  # to_device does not pin while compiling
    torch._dynamo.reset()
    params = proxy.forward_parameters(x.shape, device=device, generator=torch.Generator().manual_seed(2))
    compiled = torch.compile(proxy, backend="eager", fullgraph=True)
    assert torch.equal(compiled(x, idx, params=params)[0], proxy.replace(x, idx, params=params))


@pytest.mark.parametrize("mode", F.MODES)
def test_replace_the_images_alone_is_one_graph_and_equals_eager(mode, device):
    bank, x, idx = _case(device)
    proxy = ProxyTransform(bank, mode=mode, threshold=0.5, p=0.5)
    params = proxy.forward_parameters(x.shape, device=device, generator=torch.Generator().manual_seed(2))
    _assert_one_graph(torch._dynamo.explain(proxy.replace)(x, idx, params=params))
    compiled = torch.compile(proxy.replace, backend="eager", fullgraph=True)
    assert torch.equal(compiled(x, idx, params=params), proxy.replace(x, idx, params=params))


@pytest.mark.parametrize("exact", [False, True], ids=["reduced", "exact"])
def test_the_blur_at_224_px_is_one_graph_and_equals_eager(exact, device):
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(device)
    _assert_one_graph(torch._dynamo.explain(F.gaussian_blur)(x, 7.0, exact=exact))  # matrices built in the graph
    compiled = torch.compile(F.gaussian_blur, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, 7.0, exact=exact), F.gaussian_blur(x, 7.0, exact=exact), rtol=0, atol=1e-6)
    bank = MaskBank(2, resolution=(4, 4), device=device)
    bank.put(torch.tensor([0, 1]), torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0)))
    proxy = ProxyTransform(bank, mode="blur", threshold=0.5)
    _assert_one_graph(torch._dynamo.explain(proxy.replace)(x, torch.tensor([0, 1])))
