"""ProxySampler: DistributedSampler's rules over the live items; append mode (the thesis' "add proxy
images" option) over two epochs with a refresh between, in a plain loop, under DDP (2 gloo ranks)
and in Lightning."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import proxyaug as pa

from .conftest import SmallCNN


def _base(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, 4, (n,), generator=g))


def _wrong_on_every_image():
    """Predicts class 3 for every image: with labels < 3 every image is a mistake, so a refresh maps exactly its indices."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        net[0].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 10.0]))
    return net


def _append_ds(n=20):
    base = TensorDataset(torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.arange(n) % 3)
    return pa.ProxyDataset(base, proxies="append", dtype=torch.float32)


@pytest.mark.parametrize("n", [7, 2])
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
def test_replace_mode_draws_as_distributed_sampler_does(n, world, shuffle, drop_last):
    ds = pa.ProxyDataset(_base(n))
    for rank in range(world):
        ours = pa.ProxySampler(ds, shuffle=shuffle, seed=5, num_replicas=world, rank=rank, drop_last=drop_last)
        theirs = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=5, drop_last=drop_last)
        for epoch in (0, 3):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert list(ours) == list(theirs) and len(ours) == len(theirs), (rank, epoch)


def test_append_mode_in_a_plain_loop_follows_the_refresh():
    ds, net = _append_ds(), _wrong_on_every_image()
    n = len(ds.dataset)
    sampler = pa.ProxySampler(ds, seed=0)
    loader = DataLoader(ds, batch_size=6, sampler=sampler)
    proxy = pa.ProxyTransform(ds.bank, mode="black", threshold=0.0)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        drawn, changed = [], []
        for x, y, idx in loader:
            out = proxy.replace(x, idx)
            drawn += idx.tolist()
            changed += idx[(out != x).flatten(1).any(1)].tolist()
        epochs.append((drawn, changed))
        if epoch == 0:
            report = pa.refresh(net, ds, indices=[1, 4, 9, 16, 17], fraction=1.0)
            assert report.written == 5 and len(ds) == 2 * n  # the length stays: samplers built once keep working
    (first, none), (second, proxies) = epochs
    assert sorted(first) == list(range(n)) and none == []  # each original once, no extras yet
    extras = [n + i for i in (1, 4, 9, 16, 17)]
    assert sorted(second) == list(range(n)) + extras  # each live item once: the originals and the 5 proxies
    assert sorted(proxies) == extras  # exactly the extra items were turned into proxies


def test_a_plain_sampler_over_append_mode_is_refused_with_the_fix():
    ds = _append_ds()
    with pytest.raises(IndexError, match=r"extra slot of sample \d+, which holds no map.*proxyaug.ProxySampler\(ds\)"):
        list(DataLoader(ds, batch_size=8, shuffle=True))


def test_bad_arguments_are_explained():
    with pytest.raises(TypeError, match=r"ds must be a proxyaug.ProxyDataset \(anything with live_items\(\)\); got TensorDataset"):
        pa.ProxySampler(_base())
    ds = pa.ProxyDataset(_base())
    with pytest.raises(ValueError, match=r"num_replicas"):
        pa.ProxySampler(ds, num_replicas=0)
    with pytest.raises(ValueError, match=r"rank=-1 is not valid"):
        pa.ProxySampler(ds, rank=-1)
    with pytest.raises(ValueError, match=r"rank=2 is not valid for num_replicas=2; expected 0 <= rank < 2"):
        list(pa.ProxySampler(ds, num_replicas=2, rank=2))


def test_it_pickles_and_reads_the_live_items_in_each_epoch():
    import pickle

    ds = _append_ds()
    sampler = pickle.loads(pickle.dumps(pa.ProxySampler(ds, shuffle=False)))
    assert list(sampler) == list(range(20)) and len(sampler) == 20


# -- two ranks --------------------------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        ds, model = _append_ds(), SmallCNN()
        model.drop.p = 0.0
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
        proxy = pa.ProxyTransform(ds.bank, mode="black", threshold=0.5)
        sampler = pa.ProxySampler(ds, seed=3)  # rank and world read from the process group
        loader = DataLoader(ds, batch_size=4, sampler=sampler)
        drawn, reports = [], []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            seen = []
            for x, y, idx in loader:
                logits = ddp(proxy.replace(x, idx))
                ds.observe(idx, logits, y)
                opt.zero_grad()
                nn.functional.cross_entropy(logits, y).backward()
                opt.step()
                seen += idx.tolist()
            drawn.append(seen)
            if epoch == 0:
                reports.append(vars(pa.refresh(model, ds, fraction=1.0, seed=0)))
        torch.save({"drawn": drawn, "live": ds.live_items(), "present": ds.bank.present, "report": reports[0]},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_append_mode_under_ddp_draws_every_live_item_once_per_epoch(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert torch.equal(r0["present"], r1["present"]) and torch.equal(r0["live"], r1["live"])  # the same bank everywhere
    n, written = 20, r0["report"]["written"]
    assert written > 0 and r0["live"].numel() == n + written
    for epoch, live in enumerate([list(range(n)), r0["live"].tolist()]):
        a, b = r0["drawn"][epoch], r1["drawn"][epoch]
        assert len(a) == len(b) == -(-len(live) // 2)  # every rank draws the same number
        both = a + b
        assert set(both) == set(live) and len(both) - len(set(both)) == len(both) - len(live)  # each once, bar the padding
    assert set(r0["drawn"][1] + r1["drawn"][1]) - set(range(n))  # the extras are drawn in epoch 2


# -- Lightning --------------------------------------------------------------------------------------


def test_append_mode_in_lightning_follows_the_refresh(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from proxyaug.integrations.lightning import ProxyAttention

    ds = _append_ds()
    callback = ProxyAttention(ds, pa.FixedSchedule([0], epochs=2), refresh={"indices": [2, 5, 11], "fraction": 1.0})
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=str(tmp_path), callbacks=[callback],
                        use_distributed_sampler=False, reload_dataloaders_every_n_epochs=1)
    module = _Recording(str(tmp_path))  # defined below, once Lightning is known to import
    # batches of 4: 5 per epoch, then 6 (without reloading, Lightning would stop epoch 2 after the first 5)
    trainer.fit(module, DataLoader(ds, batch_size=4, sampler=pa.ProxySampler(ds)))
    assert callback.reports[0].written == 3
    assert sorted(module.drawn[0]) == list(range(20))
    assert sorted(module.drawn[1]) == list(range(20)) + [22, 25, 31]  # each live item once, the proxies included


try:
    import lightning.pytorch as _L
except ImportError:  # pragma: no cover - Lightning is in the dev extra
    _L = None

if _L is not None:

    class _Recording(_L.LightningModule):
        """Predicts the last class for every image (lr 0: it stays so) and writes what each rank drew."""

        def __init__(self, out: str):
            super().__init__()
            self.net, self.out, self.drawn = _wrong_on_every_image(), out, {}

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y, idx = batch
            self.drawn.setdefault(self.current_epoch, []).extend(idx.tolist())
            return nn.functional.cross_entropy(self(x), y)

        def on_train_end(self):
            torch.save(self.drawn, os.path.join(self.out, f"rank{self.global_rank}.pt"))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

        def teardown(self, stage):
            # Lightning destroys only NCCL groups at exit; a gloo group left alive aborted a worker
            # now and then as rank 0 (the store's host) exited first. The last hook of fit: end together.
            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


@pytest.mark.skipif(_L is None or not dist.is_available(), reason="needs Lightning and torch.distributed")
def test_append_mode_in_lightning_ddp_shards_the_live_items(tmp_path):
    from proxyaug.integrations.lightning import ProxyAttention

    ds = _append_ds()
    callback = ProxyAttention(ds, pa.FixedSchedule([0], epochs=2), refresh={"indices": [2, 5, 11], "fraction": 1.0})
    trainer = _L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path), callbacks=[callback],
                         use_distributed_sampler=False, reload_dataloaders_every_n_epochs=1)
    trainer.fit(_Recording(str(tmp_path)), DataLoader(ds, batch_size=2, sampler=pa.ProxySampler(ds)))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for epoch, live in enumerate([list(range(20)), list(range(20)) + [22, 25, 31]]):
        a, b = r0[epoch], r1[epoch]
        assert len(a) == len(b) == -(-len(live) // 2) and set(a + b) == set(live), epoch  # sharded, each live item drawn
        assert len(a + b) - len(set(a + b)) == len(a + b) - len(live)  # repeats only as padding
