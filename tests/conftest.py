"""Shared fixtures. The tensor tests run on the device that ``PROXYAUG_TEST_DEVICE`` (or the
``--device`` option) names, ``cpu`` by default: ``PROXYAUG_TEST_DEVICE=cuda make test`` runs them on
the GPU, with the host-sync checks that only CUDA can make."""

import os

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


DEVICE_ENV = "PROXYAUG_TEST_DEVICE"
_DEVICE = pytest.StashKey[torch.device]()


def pytest_addoption(parser):
    parser.addoption("--device", default=None,
                     help=f"device of the tensor tests: cpu, cuda or cuda:N (default: ${DEVICE_ENV}, else cpu)")


def resolve_device(config) -> torch.device:
    """The device the ``--device`` option or ``$PROXYAUG_TEST_DEVICE`` names (``cpu`` when neither does);
    a value that is not an available ``cpu`` or ``cuda`` device stops the run before collection."""
    value = config.getoption("--device", default=None) or os.environ.get(DEVICE_ENV) or "cpu"
    source = "--device" if config.getoption("--device", default=None) else DEVICE_ENV
    try:
        dev = torch.device(value)
    except RuntimeError:
        raise pytest.UsageError(f"{source}={value!r} is not a device; expected cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise pytest.UsageError(f"{source}={value!r} is not supported by the test suite; expected cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"{source}={value!r} but CUDA is not available here (torch {torch.__version__}); expected cpu")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise pytest.UsageError(f"{source}={value!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev



def pytest_configure(config):
    config.stash[_DEVICE] = resolve_device(config)
    if config.stash[_DEVICE].type == "cuda":  # float32 convolutions in full float32, as on the CPU, for the same tolerances
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def pytest_report_header(config):
    return f"proxyaug tensor tests on: {config.stash[_DEVICE]} (--device / ${DEVICE_ENV})"


@pytest.fixture(scope="session")
def device(pytestconfig) -> torch.device:
    """The device of the tensor tests (see the module's docstring)."""
    return pytestconfig.stash[_DEVICE]


@pytest.fixture
def cuda_only(device):
    """Skips a check that only CUDA can make (host syncs, streams) when the tests run on the CPU."""
    if device.type != "cuda":
        pytest.skip(f"a CUDA-only check (host syncs, streams); the tests run on {device}: set {DEVICE_ENV}=cuda")
    return device


@pytest.fixture
def no_host_sync(cuda_only):
    """A context manager in which any host-device synchronisation on CUDA raises (torch's sync debug mode)."""
    import contextlib

    @contextlib.contextmanager
    def check():
        torch.cuda.synchronize(cuda_only)
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(0)

    return check


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
    """The model's predicted class of every item of ``ds``, on the CPU (the model may be on any device)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        pred = model(x.to(next(model.parameters()).device)).argmax(1).cpu()
    model.train(was)
    return pred


class SharedBlock(nn.Module):
    """A block the forward applies twice (weights shared): the target layer fires twice per forward."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.block(self.block(self.stem(x).relu())).mean(dim=(2, 3)))
