"""MapCapture under torch.distributed: 2 processes on gloo, a DDP model, each rank capturing its own samples."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

import proxyaug as pa

from .conftest import SmallCNN

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

N = 32


def _setup():
    torch.manual_seed(0)
    model = SmallCNN()
    model.drop.p = 0.0  # each rank's dropout would draw from its own RNG stream
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.rand(N, 3, 16, 16, generator=g), torch.randint(0, 4, (N,), generator=g))
    return pa.ProxyDataset(data, dtype=torch.float32), model


def _step(capture, model, ds, idx):
    x, y = ds.dataset.tensors[0][idx], ds.dataset.tensors[1][idx]
    with capture.step(model):
        logits = model(x)
        capture.observe(idx, logits, y)
        nn.functional.cross_entropy(logits, y).backward()


def _worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        ds, model = _setup()
        ddp = nn.parallel.DistributedDataParallel(model)
        capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"), select="loss", budget=N)
        # rank 0 has 16 samples, rank 1 has 12 (uneven shares; samples 28..31 nowhere)
        _step(capture, ddp, ds, torch.arange(rank, 32 if rank == 0 else 24, world))
        report = capture.commit()
        torch.save({"maps": ds.bank.maps, "present": ds.bank.present, "report": vars(report)}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_every_rank_ends_with_the_same_bank_as_one_process():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, os.path.join(tmp, "store"), tmp), nprocs=2, join=True)
        r0, r1 = (torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in (0, 1))
    assert torch.equal(r0["present"], r1["present"]) and torch.equal(r0["maps"], r1["maps"])
    assert r0["report"]["world_size"] == 2 and r0["report"]["computed"] == 16 and r1["report"]["computed"] == 12
    assert r0["report"]["written"] == 16 + 12
    # one process, the same two shares as two steps with the same weights
    ds, model = _setup()
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"), select="loss", budget=N, distributed=False)
    _step(capture, model, ds, torch.arange(0, 32, 2))
    _step(capture, model, ds, torch.arange(1, 24, 2))
    capture.commit()
    assert torch.equal(r0["present"], ds.bank.present)
    torch.testing.assert_close(r0["maps"], ds.bank.maps, atol=1e-6, rtol=0)
