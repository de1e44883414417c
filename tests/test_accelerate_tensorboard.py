import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import proxyaug as pa

from .conftest import SmallCNN


def _ds():
    g = torch.Generator().manual_seed(0)
    return pa.ProxyDataset(TensorDataset(torch.rand(32, 3, 16, 16, generator=g), torch.randint(0, 4, (32,), generator=g)))


def test_accelerate_recipe_with_checkpointing(tmp_path):
    accelerate = pytest.importorskip("accelerate")
    acc = accelerate.Accelerator(cpu=True)
    ds = _ds()
    torch.manual_seed(0)
    net = SmallCNN()
    model, opt, loader = acc.prepare(net, torch.optim.SGD(net.parameters(), lr=0.05), DataLoader(ds, batch_size=8))
    acc.register_for_checkpointing(ds)  # bank, refresh count, observations
    proxy = pa.ProxyTransform(ds.bank, mode="black", threshold=0.5)
    for epoch in range(2):
        for x, y, idx in loader:
            loss = nn.functional.cross_entropy(model(proxy.replace(x, idx)), y)
            opt.zero_grad()
            acc.backward(loss)
            opt.step()
        report = pa.refresh(acc.unwrap_model(model), ds, fraction=1.0)
    assert ds.refreshes == 2 and report.written == report.wrong
    acc.save_state(str(tmp_path / "state"))

    again = _ds()
    acc2 = accelerate.Accelerator(cpu=True)
    acc2.register_for_checkpointing(again)
    acc2.load_state(str(tmp_path / "state"))
    assert torch.equal(again.bank.maps, ds.bank.maps) and again.refreshes == 2


def test_tensorboard_logs_statistics_and_a_grid(tmp_path, model):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from proxyaug.integrations.tensorboard import log_refresh

    ds = _ds()
    report = pa.refresh(model, ds, fraction=1.0)
    with SummaryWriter(str(tmp_path)) as writer:
        log_refresh(writer, report, step=1, dataset=ds, images=4)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = events.Tags()
    assert {"proxyaug/wrong", "proxyaug/written", "proxyaug/seconds"} <= set(tags["scalars"])
    assert events.Scalars("proxyaug/written")[0].value == report.written
    assert tags["images"] == ["proxyaug/original_map_proxy"]


def test_tensorboard_grid_in_append_mode_shows_the_maps_and_proxies(model, monkeypatch):
    pytest.importorskip("tensorboard")
    import proxyaug.integrations.tensorboard as tb

    ds = pa.ProxyDataset(_ds().dataset, proxies="append")
    report = pa.refresh(model, ds, fraction=1.0)
    assert report.written and torch.equal(report.rows, report.indices + len(ds.dataset))
    seen = {}

    def grid(images, maps, proxies, *args, **kwargs):
        seen.update(images=images, maps=maps, proxies=proxies)
        return torch.zeros(3, 4, 4)

    monkeypatch.setattr(tb, "proxy_grid", grid)

    class Writer:
        def add_scalar(self, *args):
            pass

        def add_image(self, *args):
            pass

    tb.log_refresh(Writer(), report, step=1, dataset=ds, proxy=pa.ProxyTransform(ds.bank, mode="black", threshold=0.0), images=4)
    expect = torch.stack([ds.dataset[int(i)][0] for i in report.indices[:4]])
    assert torch.equal(seen["images"], expect)  # the samples' own images
    assert seen["maps"].amax(dim=(1, 2)).gt(0).all()  # their maps, read from their bank rows
    assert not torch.equal(seen["proxies"], seen["images"])  # and their proxies
