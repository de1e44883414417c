"""Resume under torch.distributed (defect 4): a checkpoint that rank 0 writes carries every rank's
observed mistakes, so the next refresh after a resume scans what an uninterrupted run would scan."""

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

import proxyaug as pa

from .conftest import SmallCNN

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

N = 48


def _data():
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.rand(N, 3, 16, 16, generator=g), torch.randint(0, 4, (N,), generator=g))


def _worker(rank: int, world: int, store: str, out: str, device: str) -> None:
    torch.set_num_threads(1)
    # a short timeout: a collective that only one rank enters fails instead of hanging the test
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        model = SmallCNN().to(device).eval()
        ds = pa.ProxyDataset(_data(), dtype=torch.float32, device=device)
        # each rank observes DIFFERENT samples (its DistributedSampler share)
        idx = torch.arange(rank, N, world)
        with torch.no_grad():
            logits = model(ds.dataset.tensors[0][idx].to(device))
        ds.observe(idx, logits, ds.dataset.tensors[1][idx])
        local = ds.observed_wrong
        # distributed=False: this rank's records alone, with no collective (rank 1 never joins one here)
        alone = pa.refresh(model, ds.__deepcopy__({}), fraction=1.0, seed=1, distributed=False) if rank == 0 else None
        alone_state = ds.state_dict(distributed=False)["observed"].nonzero().flatten() if rank == 0 else None
        state = ds.state_dict()  # a collective: every rank calls it, rank 0 writes it
        if rank == 0:
            torch.save(state, os.path.join(out, "ds.pt"))
        callback_state = None
        try:
            from proxyaug.integrations.lightning import ProxyAttention

            callback_state = ProxyAttention(ds, "1,p").state_dict()  # the callback's checkpoint, also from every rank
        except ImportError:
            pass
        dist.barrier()
        uninterrupted = pa.refresh(model, ds, fraction=1.0, seed=1)
        resumed = pa.ProxyDataset(_data(), dtype=torch.float32, device=device)
        resumed.load_state_dict(torch.load(os.path.join(out, "ds.pt"), weights_only=False))
        loaded = resumed.observed_wrong
        again = pa.refresh(model, resumed, fraction=1.0, seed=1)
        from_callback = None
        if callback_state is not None:
            other = pa.ProxyDataset(_data(), dtype=torch.float32, device=device)
            ProxyAttention(other, "1,p").load_state_dict(callback_state)
            from_callback = other.observed_wrong
        torch.save({
            "local": local, "alone_state": alone_state, "loaded": loaded, "from_callback": from_callback, "alone": None if alone is None else vars(alone),
            "uninterrupted": vars(uninterrupted), "resumed": vars(again), "present": (ds.bank.present.cpu(), resumed.bank.present.cpu()),
            "maps": (ds.bank.maps.cpu(), resumed.bank.maps.cpu()),
        }, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_a_checkpoint_from_rank_zero_resumes_with_every_ranks_observations(tmp_path, device):
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path), str(device)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    union = sorted(set(r0["local"].tolist()) | set(r1["local"].tolist()))
    assert r0["alone_state"].tolist() == r0["local"].tolist()  # state_dict(distributed=False): this rank's, no collective
    assert r0["local"].numel() and r1["local"].numel() and not set(r0["local"].tolist()) & set(r1["local"].tolist())
    for r in (r0, r1):
        assert r["loaded"].tolist() == union  # every rank resumes with the union, from rank 0's file
        if r["from_callback"] is not None:
            assert r["from_callback"].tolist() == union  # the Lightning callback's state as well
        # the next refresh scans the union, as the uninterrupted run's does, and writes the same bank
        assert r["resumed"]["source"] == r["uninterrupted"]["source"] == "observed"
        assert r["resumed"]["scanned"] == r["uninterrupted"]["scanned"] == len(union)
        assert torch.equal(r["resumed"]["indices"], r["uninterrupted"]["indices"])
        assert torch.equal(*r["present"]) and torch.equal(*r["maps"])
    assert r0["alone"]["scanned"] == r0["local"].numel() and r0["alone"]["world_size"] == 1


def test_state_dict_gathers_with_the_trackers_own_sync_and_keeps_the_local_records(device):
    """One process standing in for two: the tracker's ``dist_sync_fn`` (which gathers where the
    backend can: gloo on the CPU, NCCL on the GPU) is what ``state_dict`` syncs with."""
    ds = pa.ProxyDataset(_data(), device=device)
    ds.observe(torch.tensor([1, 4]), torch.eye(4, device=device)[[2, 2]], torch.tensor([0, 2]))  # sample 1 wrong
    other = torch.zeros(N, dtype=torch.uint8, device=device)
    other[[4, 7]] = 1  # "rank 1" recorded samples 4 and 7
    calls = []

    def gather(t, group=None):
        calls.append(t.device)
        return [t, other]

    ds.mistakes.distributed_available_fn = lambda: True
    ds.mistakes.dist_sync_fn = gather
    observed = ds.state_dict()["observed"]
    assert calls and observed.nonzero().flatten().tolist() == [1, 4, 7]
    assert ds.observed_wrong.tolist() == [1]  # this rank's own records stay as they were
    again = pa.ProxyDataset(_data(), device=device)
    again.load_state_dict(ds.state_dict())
    assert again.observed_wrong.tolist() == [1, 4, 7]
