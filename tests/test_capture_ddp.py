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


def _plain():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


def _spawn(worker, tmp):
    mp.spawn(worker, args=(2, os.path.join(tmp, "store"), tmp), nprocs=2, join=True)
    return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in (0, 1)]


def _layer_worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        ds, model = _setup()
        capture = pa.MapCapture(ds, select="loss", budget=N)  # layer=None: found on a rank's first step
        if rank == 0:  # rank 1 runs no step: it stages nothing and never finds the layer itself
            _step(capture, model, ds, torch.arange(8))
        report = capture.commit()
        torch.save({"layer": report.layer, "computed": report.computed, "written": report.written}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_every_rank_reports_the_layer_also_one_that_staged_nothing():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        r0, r1 = _spawn(_layer_worker, tmp)
    assert r0["computed"] == 8 and r1["computed"] == 0 and r0["written"] == r1["written"] == 8
    assert r0["layer"] == r1["layer"] == "features"


# each rank's steps: uneven batches, and a third step that stages again (other labels, so other maps) what the
# other rank staged in its first one: the commit must keep those later maps, with or without a restart
PLANS = {0: [[0, 2, 4, 6], [8, 10, 12, 14], [1, 3]], 1: [[1, 3, 5, 7], [9, 11, 13], [0, 2]]}


def _resume_worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model, result = _plain(), {}
        for interrupted in (False, True):
            ds, _ = _setup()
            capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="2"), select="random", budget=N)
            for s, samples in enumerate(PLANS[rank]):
                if interrupted and s == 2:  # a checkpoint (a collective), restored into fresh objects on each rank
                    state = capture.state_dict()
                    ds, _ = _setup()
                    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="2"), select="random", budget=N)
                    capture.load_state_dict(state)
                    result["state_rows"], result["loaded"] = state["rows"], capture.staged
                idx = torch.tensor(samples)
                x, y = ds.dataset.tensors[0][idx], (ds.dataset.tensors[1][idx] + s) % 4
                with capture.step(model):
                    logits = model(x)
                    capture.observe(idx, logits, y)
                    nn.functional.cross_entropy(logits, y).backward()
                model.zero_grad()
            report = capture.commit()
            result[interrupted] = {"maps": ds.bank.maps, "present": ds.bank.present, "scanned": report.scanned}
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_staged_maps_survive_a_checkpoint_on_two_ranks_without_being_multiplied():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        r0, r1 = _spawn(_resume_worker, tmp)
    # every rank saved every rank's 15 staged samples; each took back its share
    assert torch.equal(r0["state_rows"], r1["state_rows"]) and r0["state_rows"].numel() == 15
    assert (r0["loaded"], r1["loaded"]) == (8, 7)
    for r in (r0, r1):
        assert r[True]["scanned"] == r[False]["scanned"] == 15  # not 30: the gather did not multiply them
        assert torch.equal(r[True]["present"], r[False]["present"]) and int(r[True]["present"].sum()) == 15
        assert torch.equal(r[True]["maps"], r[False]["maps"])  # and the later maps of 0..3 won, as without a restart
    assert torch.equal(r0[True]["maps"], r1[True]["maps"])
