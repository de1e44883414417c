"""A refresh must never harm the run it is part of: faults, NaN, memory and graph safety."""

import gc
import os
import warnings
import weakref

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import proxyaug as pa


def test_non_finite_maps_are_skipped_with_a_warning(model):
    x = torch.rand(12, 3, 16, 16)
    x[:3, :, 4, 4] = float("nan")  # corrupt images: NaN activations; their argmax is 0, their label 1
    ds = pa.ProxyDataset(TensorDataset(x, torch.ones(12, dtype=torch.long)))
    with pytest.warns(RuntimeWarning, match=r"3 of \d+ attention maps were not finite"):
        report = pa.refresh(model, ds, fraction=1.0)
    assert report.skipped == 3 and report.written == report.chosen - 3
    assert not ds.bank.present[:3].any() and torch.isfinite(ds.bank.maps).all()
    assert torch.equal(ds.bank.present.nonzero().flatten(), report.indices)


@pytest.mark.parametrize("phase_call", [1, 3, 12])  # the scan's first batch, its third, the attention step
@pytest.mark.parametrize("exc", [RuntimeError("CUDA out of memory"), KeyboardInterrupt()])
def test_a_fault_anywhere_leaves_everything_as_it_was(model, base, phase_call, exc):
    ds = pa.ProxyDataset(base)
    pa.refresh(model, ds, fraction=0.5, seed=1)
    state = {k: v.clone() for k, v in ds.bank.state_dict().items()}
    model.train()
    nn.functional.cross_entropy(model(base.tensors[0][:8]), base.tensors[1][:8]).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    calls = {"n": 0}

    def fault(module, inputs, output):
        calls["n"] += 1
        if calls["n"] == phase_call:
            raise exc

    handle = model.head.register_forward_hook(fault)
    with pytest.raises(type(exc)):
        pa.refresh(model, ds, fraction=1.0, batch_size=4)
    handle.remove()
    assert all(torch.equal(v, ds.bank.state_dict()[k]) for k, v in state.items())
    assert ds.refreshes == 1 and all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules()) and torch.is_grad_enabled()
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))


def test_no_tensor_saved_for_backward_outlives_a_refresh(model, base):
    ds = pa.ProxyDataset(base)
    saved = []

    class Box:
        def __init__(self, t):
            self.t = t

    def pack(t):
        box = Box(t)
        saved.append(weakref.ref(box))
        return box

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.t):
        report = pa.refresh(model, ds, fraction=1.0)
    gc.collect()
    assert report.written > 0 and saved  # the attention step did build a graph...
    assert all(ref() is None for ref in saved)  # ...and none of it survives


def _rss_bytes():
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_a_thousand_refreshes_do_not_grow_memory(model):
    g = torch.Generator().manual_seed(0)
    ds = pa.ProxyDataset(TensorDataset(torch.rand(16, 3, 16, 16, generator=g), torch.randint(0, 4, (16,), generator=g)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(100):  # warm-up: allocator pools, lazy imports
            pa.refresh(model, ds, fraction=1.0, progress=False)
        gc.collect()
        before = _rss_bytes()
        for _ in range(1000):
            pa.refresh(model, ds, fraction=1.0, progress=False)
        gc.collect()
    growth = (_rss_bytes() - before) / before
    assert ds.refreshes == 1100 and growth < 0.05, f"resident memory grew {growth:.1%}"
