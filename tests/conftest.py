import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset


class Items(Dataset):
    """A base dataset yielding fixed items (possibly malformed ones), with an attribute to forward."""

    classes = ["zero", "one"]

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class SmallCNN(nn.Module):
    """A tiny classifier with BatchNorm and Dropout (their flags and stats must survive refreshes)."""

    def __init__(self, in_ch: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.drop(self.pool(self.features(x)).flatten(1)))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SmallCNN()


@pytest.fixture
def base():
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(40, 3, 16, 16, generator=g), torch.randint(0, 4, (40,), generator=g))


@pytest.fixture
def copies(monkeypatch):
    """The ``non_blocking`` flag of every ``Tensor.to`` call made during the test, in order."""
    calls = []
    original = torch.Tensor.to

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("non_blocking", False))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    return calls


def predictions(model, ds):
    was = model.training
    model.eval()
    with torch.no_grad():
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        pred = model(x).argmax(1)
    model.train(was)
    return pred
