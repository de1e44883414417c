"""DataLoader workers on the GPU path and the CPU path: start methods, persistence, pinned memory."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import proxyaug as pa

CONTEXTS = ["fork", "spawn"]


def _base():
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(24, 3, 16, 16, generator=g), torch.randint(0, 4, (24,), generator=g))


def _epoch(loader):
    xs, idxs = [], []
    for x, _, idx in loader:
        xs.append(x)
        idxs.append(idx)
    idx = torch.cat(idxs)
    return torch.cat(xs)[idx.argsort()]


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true but no accelerator")
@pytest.mark.parametrize("context", CONTEXTS)
def test_gpu_path_workers_persistent_pinned(context):
    base = _base()
    ds = pa.ProxyDataset(base)
    loader = DataLoader(ds, batch_size=5, shuffle=True, num_workers=2, multiprocessing_context=context,
                        persistent_workers=True, pin_memory=True, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        assert torch.equal(_epoch(loader), base.tensors[0])


@pytest.mark.parametrize("context", CONTEXTS)
def test_cpu_path_workers_see_refreshed_maps_without_restarting(context):
    base = _base()
    ds = pa.ProxyDataset(base, resolution=(4, 4)).enable_cpu_path(mode="black", threshold=0.5)
    assert ds.bank.maps.is_shared() and ds.bank.present.is_shared()
    loader = DataLoader(ds, batch_size=6, num_workers=2, multiprocessing_context=context, persistent_workers=True)
    assert torch.equal(_epoch(loader), base.tensors[0])  # no maps yet: unchanged
    maps = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(5))
    ds.bank.put(torch.tensor([2, 7, 19]), maps)  # as a refresh in the main process would
    seen = _epoch(loader)  # the same, still-running workers
    changed = (seen != base.tensors[0]).flatten(1).any(1)
    assert changed.nonzero().flatten().tolist() == [2, 7, 19]
    expect = pa.functional.replace(base.tensors[0][[2, 7, 19]], ds.bank.get(torch.tensor([2, 7, 19]))[0], "black", 0.5)
    assert torch.equal(seen[[2, 7, 19]], expect)


def test_cpu_path_with_albumentations_and_a_refresh(model):
    A = pytest.importorskip("albumentations")
    from proxyaug.integrations.albumentations import Albumentations

    base = _base()
    augment = Albumentations(A.Compose([A.HorizontalFlip(p=1.0)]))
    ds = pa.ProxyDataset(base, resolution=(8, 8)).enable_cpu_path(transform=augment, mode="black", threshold=0.4)
    report = pa.refresh(model, ds, fraction=1.0)  # scans canonical images, not augmented ones
    assert report.scanned == 24 and report.written == report.wrong > 0
    loader = DataLoader(ds, batch_size=8, num_workers=2, persistent_workers=True)
    seen = _epoch(loader)
    i = int(report.indices[0])
    maps, _ = ds.bank.get(torch.tensor([i]))
    expect = pa.functional.replace(base.tensors[0][i : i + 1], maps, "black", 0.4)[0].flip(-1)
    assert torch.equal(seen[i], expect)
    unmapped = int((~ds.bank.present).nonzero()[0])
    assert torch.equal(seen[unmapped], base.tensors[0][unmapped].flip(-1))


def test_cpu_path_refuses_what_would_break_sharing():
    with pytest.raises(ValueError, match=r"needs a fixed map resolution"):
        pa.ProxyDataset(_base()).enable_cpu_path()
    ds = pa.ProxyDataset(_base(), resolution=(4, 4)).enable_cpu_path()
    with pytest.raises(ValueError, match=r"stores \(4, 4\) in shared memory"):
        ds.bank.put(torch.tensor([0]), torch.rand(1, 5, 5))
    with pytest.raises(TypeError, match="transform must be callable"):
        pa.ProxyDataset(_base(), resolution=(4, 4)).enable_cpu_path(transform=3)


@pytest.mark.parametrize("context", CONTEXTS)
def test_append_mode_with_persistent_workers_follows_refreshes(context):
    from .conftest import SmallCNN

    torch.manual_seed(0)
    net = SmallCNN()
    base = _base()
    ds = pa.ProxyDataset(base, proxies="append")
    sampler = pa.ProxySampler(ds, seed=0)  # draws the live items: the epoch follows the refresh
    loader = DataLoader(ds, batch_size=6, sampler=sampler, num_workers=2, multiprocessing_context=context, persistent_workers=True)
    seen = [torch.cat([idx for _, _, idx in loader])]  # epoch 1: the workers start, no extras yet
    report = pa.refresh(net, ds, fraction=1.0)
    assert report.written > 0 and len(ds) == 2 * 24 and len(sampler) == 24 + report.written
    sampler.set_epoch(1)
    seen.append(torch.cat([idx for _, _, idx in loader]))  # epoch 2: the same workers, more items
    assert sorted(seen[0].tolist()) == list(range(24))
    assert sorted(seen[1].tolist()) == list(range(24)) + sorted((24 + report.indices).tolist())


def test_cpu_path_in_append_mode_serves_the_new_rows_in_running_workers():
    from .conftest import SmallCNN

    torch.manual_seed(0)
    net = SmallCNN()
    base = _base()
    ds = pa.ProxyDataset(base, proxies="append", resolution=(8, 8)).enable_cpu_path(mode="black", threshold=0.5)
    loader = DataLoader(ds, batch_size=6, sampler=pa.ProxySampler(ds, shuffle=False), num_workers=2, persistent_workers=True)
    list(loader)
    report = pa.refresh(net, ds, fraction=1.0)
    got = {int(i): x for xb, _, ib in loader for x, i in zip(xb, ib)}
    for sample in report.indices.tolist():
        assert torch.equal(got[sample], base[sample][0])  # originals untouched
        assert not torch.equal(got[24 + sample], base[sample][0])  # their extra items are proxies
