"""The study's checkpoint carries every random state a resumed run draws from (CUDA's too), and its
sampler draws an append-mode arm's live items as 0.1's growing dataset did."""

import torch
from torch.utils.data import RandomSampler, TensorDataset

import proxyaug as pa
from benchmarks.study import loop


def test_checkpoint_holds_cuda_rng_states_only_where_cuda_is_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert set(loop.rng_states()) == {"rng"}
    fake = [torch.full((16,), 7, dtype=torch.uint8), torch.full((16,), 9, dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: fake)
    states = loop.rng_states()
    assert set(states) == {"rng", "cuda_rng"} and states["cuda_rng"] is fake


def test_restore_sets_the_cpu_and_each_cuda_generator_and_works_without_cuda(monkeypatch):
    saved = torch.get_rng_state()
    try:
        state = {"rng": torch.manual_seed(3).get_state(), "cuda_rng": [torch.zeros(16, dtype=torch.uint8)] * 2}
        torch.manual_seed(4)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        loop.restore_rng(state)  # written on a GPU machine, resumed on a CPU one: the CPU state alone
        assert torch.equal(torch.get_rng_state(), state["rng"])
        calls = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: calls.append(device))
        loop.restore_rng(state)
        assert calls == [0]  # one device here: the states of the devices present
        loop.restore_rng({"rng": state["rng"]})  # a checkpoint written without CUDA
        assert calls == [0]
    finally:
        torch.set_rng_state(saved)


def test_checkpoint_and_resume_use_them():
    import inspect

    assert "**rng_states()" in inspect.getsource(loop.Run.checkpoint)
    assert "restore_rng(state)" in inspect.getsource(loop.Run.resume)


def test_an_append_arm_draws_what_a_random_sampler_drew_over_the_grown_dataset():
    n = 12
    base = TensorDataset(torch.rand(n, 1, 4, 4), torch.zeros(n, dtype=torch.long))
    ds = pa.ProxyDataset(base, proxies="append", resolution=(2, 2))
    ds.commit(torch.tensor([2, 7, 9]), torch.rand(3, 2, 2), reset=False, report=None)
    draws = list(loop.LiveDraws(ds, 10, torch.Generator().manual_seed(5)))
    grown = list(range(n)) + [n + 2, n + 7, n + 9]  # 0.1's items: the originals, then the extras in sample order
    expect = [grown[p] for p in RandomSampler(range(len(grown)), num_samples=10, generator=torch.Generator().manual_seed(5))]
    assert draws == expect and all(ds[i][2] == i for i in draws)
