"""A run stopped after a refresh and resumed from a checkpoint ends exactly like one that never stopped."""

import io

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import proxyaug as pa

from .conftest import SmallCNN


def _data():
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(40, 3, 16, 16, generator=g), torch.randint(0, 4, (40,), generator=g))


class Run:
    """Everything a training run holds."""

    def __init__(self):
        torch.manual_seed(0)
        self.model = SmallCNN()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.ds = pa.ProxyDataset(_data())
        self.proxy = pa.ProxyTransform(self.ds.bank, mode="mean", threshold=0.5, p=0.5)  # random draws
        self.gen = torch.Generator().manual_seed(1)
        self.loader = DataLoader(self.ds, batch_size=8, shuffle=True, generator=self.gen)
        self.schedule = pa.ProxySchedule.on_plateau(patience=1)

    def epoch(self, e):
        self.model.train()
        total = 0.0
        for x, y, idx in self.loader:
            logits = self.model(self.proxy.replace(x, idx))
            self.ds.observe(idx, logits, y)
            loss = nn.functional.cross_entropy(logits, y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            total += loss.item()
        if self.schedule.should_refresh(e, metric=-total):
            pa.refresh(self.model, self.ds, fraction=0.5)

    def checkpoint(self):
        buf = io.BytesIO()
        torch.save({
            "model": self.model.state_dict(), "opt": self.opt.state_dict(), "ds": self.ds.state_dict(),
            "schedule": self.schedule.state_dict(), "rng": torch.get_rng_state(), "loader_rng": self.gen.get_state(),
        }, buf)
        return buf.getvalue()

    def restore(self, blob):
        state = torch.load(io.BytesIO(blob), weights_only=False)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.ds.load_state_dict(state["ds"])
        self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"])
        self.gen.set_state(state["loader_rng"])


def test_resumed_run_continues_exactly():
    whole = Run()
    for e in range(6):
        whole.epoch(e)
    assert whole.ds.refreshes >= 2  # the run did refresh, before and after the cut

    first = Run()
    for e in range(3):
        first.epoch(e)
    blob = first.checkpoint()
    del first
    torch.manual_seed(123)  # whatever happened in between
    second = Run()
    second.restore(blob)
    for e in range(3, 6):
        second.epoch(e)

    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(), second.model.state_dict().values()))
    assert torch.equal(whole.ds.bank.maps, second.ds.bank.maps) and torch.equal(whole.ds.bank.present, second.ds.bank.present)
    assert whole.ds.refreshes == second.ds.refreshes


def test_state_of_another_dataset_is_refused():
    state = pa.ProxyDataset(_data()).state_dict()
    small = pa.ProxyDataset(TensorDataset(torch.rand(7, 3, 4, 4), torch.zeros(7, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"observations of a tensor of shape \(40,\).*; this dataset has 7 samples"):
        small.load_state_dict(state)
    with pytest.raises(ValueError, match=r"bank of 40 samples but this bank has 7"):
        small.load_state_dict({**state, "observed": None})
    with pytest.raises(KeyError, match=r"state lacks \['observed'\]"):
        small.load_state_dict({"bank": state["bank"], "refreshes": 0})
