"""refresh under torch.distributed: 2 processes on the gloo backend over a file store."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

import proxyaug as pa

from .conftest import SmallCNN

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def _setup(device="cpu"):
    torch.manual_seed(0)
    model = SmallCNN().to(device)
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.rand(60, 3, 16, 16, generator=g), torch.randint(0, 4, (60,), generator=g))
    return pa.ProxyDataset(data, dtype=torch.float32, device=device), model


def _worker(rank: int, world: int, store: str, out: str, device: str = "cpu") -> None:
    # on CUDA both ranks share the one GPU: gloo all-reduces CUDA tensors (NCCL refuses two ranks on one device)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        ds, model = _setup(device)
        first = pa.refresh(model, ds, fraction=0.5, seed=0, batch_size=8)
        # each rank observes its own half, as under a DistributedSampler
        idx = torch.arange(rank, 60, world)
        with torch.no_grad():
            logits = model.eval()(ds.dataset.tensors[0][idx].to(device))
        ds.observe(idx, logits, ds.dataset.tensors[1][idx])
        second = pa.refresh(model, ds, fraction=1.0, seed=1, batch_size=8)
        torch.save({
            "maps": ds.bank.maps, "present": ds.bank.present, "first": vars(first), "second": vars(second),
        }, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ranks_agree_with_each_other_and_with_one_process(tmp_path, device):
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path), str(device)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False, map_location="cpu") for r in (0, 1))
    # ranks agree bit for bit on which samples hold maps, and on the maps
    assert torch.equal(r0["present"], r1["present"]) and torch.equal(r0["maps"], r1["maps"])
    # ... and with what one process computes
    ds, model = _setup(device)
    single = pa.refresh(model, ds, fraction=0.5, seed=0, batch_size=8, distributed=False)
    assert torch.equal(r0["first"]["indices"].cpu(), single.indices.cpu()) and single.written > 0
    # each rank computed only its share of the first refresh's maps
    computed = [r["first"]["computed"] for r in (r0, r1)]
    assert sum(computed) == single.chosen and max(computed) - min(computed) <= 1
    assert r0["first"]["world_size"] == 2 and single.world_size == 1 and single.computed == single.chosen
    # the second refresh scanned the union of both ranks' observed mistakes
    with torch.no_grad():
        wrong = (model.eval()(ds.dataset.tensors[0].to(device)).argmax(1).cpu() != ds.dataset.tensors[1]).nonzero().flatten()
    for r in (r0, r1):
        assert r["second"]["source"] == "observed" and r["second"]["scanned"] == wrong.numel()
    pa.refresh(model, ds, fraction=1.0, seed=1, batch_size=8, distributed=False, indices=wrong)
    assert torch.equal(ds.bank.present.cpu(), r0["present"])
    assert (ds.bank.maps.cpu() - r0["maps"]).abs().max() <= 1e-4


def test_distributed_true_without_a_group_is_refused(model, base):
    with pytest.raises(RuntimeError, match=r"distributed=True needs an initialised torch.distributed process group"):
        pa.refresh(model, pa.ProxyDataset(base), distributed=True)


class _FailsOnRankOne(SmallCNN):
    def forward(self, x):
        if dist.get_rank() == 1:
            raise RuntimeError("broken batch on rank 1")
        return super().forward(x)


def _failing_worker(rank: int, world: int, store: str, out: str) -> None:
    import datetime

    torch.set_num_threads(1)
    # a short timeout: without the fix, rank 0 would wait for rank 1 in the next collective
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=30))
    try:
        ds, _ = _setup()
        torch.manual_seed(0)
        model = _FailsOnRankOne()
        before = ds.bank.state_dict()
        try:
            pa.refresh(model, ds, fraction=0.5, seed=0, batch_size=8)
            message = "no error"
        except Exception as err:  # noqa: BLE001
            message = f"{type(err).__name__}: {err}"
        unchanged = all(torch.equal(v, before[k]) for k, v in ds.bank.state_dict().items()) and ds.refreshes == 0
        with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
            f.write(f"{unchanged}\n{message}")
    finally:
        dist.destroy_process_group()


def test_a_refresh_that_fails_on_one_rank_fails_on_every_rank(tmp_path):
    mp.spawn(_failing_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = ((tmp_path / f"rank{r}.txt").read_text().split("\n", 1) for r in (0, 1))
    assert r1 == ["True", "RuntimeError: broken batch on rank 1"]
    assert r0[0] == "True" and r0[1].startswith("RuntimeError: refresh failed on rank(s) [1] of 2")


def _layer_worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        ds, model = _setup()
        # one chosen sample: rank 0 maps it, rank 1 computes no map (and, with layer=None, finds no layer itself)
        report = pa.refresh(model, ds, select="loss", budget=1, indices=[0, 1, 2, 3], batch_size=8)
        torch.save({"layer": report.layer, "computed": report.computed}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_every_rank_reports_the_layer_also_one_that_computed_no_map(tmp_path):
    mp.spawn(_layer_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert (r0["computed"], r1["computed"]) == (1, 0)
    assert r0["layer"] == r1["layer"] == "features"
