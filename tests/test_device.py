"""The device switch of the test suite: ``PROXYAUG_TEST_DEVICE`` (or ``--device``) picks where the
tensor tests run; a value that is not an available cpu / cuda device stops the run at start-up."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import DEVICE_ENV

ROOT = Path(__file__).resolve().parents[1]


def test_the_fixture_is_the_device_the_switch_names(device, pytestconfig):
    named = pytestconfig.getoption("--device") or os.environ.get(DEVICE_ENV) or "cpu"
    assert device == torch.device(named)
    x = torch.zeros(2, device=device)
    assert x.device.type == device.type


def _run(value, *args):
    env = {**os.environ, DEVICE_ENV: value}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--co", str(ROOT / "tests" / "test_device.py"), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "value, match",
    [
        ("tpu", "PROXYAUG_TEST_DEVICE='tpu' is not a device; expected cpu, cuda or cuda:N"),
        ("meta", "PROXYAUG_TEST_DEVICE='meta' is not supported by the test suite; expected cpu, cuda or cuda:N"),
    ],
)
def test_an_unknown_device_stops_the_run_at_start_up(value, match):
    r = _run(value)
    assert r.returncode == pytest.ExitCode.USAGE_ERROR, r.stdout + r.stderr
    assert match in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_cuda_is_refused_by_name():
    r = _run("cuda")
    assert r.returncode == pytest.ExitCode.USAGE_ERROR and "PROXYAUG_TEST_DEVICE='cuda' but CUDA is not available here" in r.stderr


def test_the_option_wins_over_the_variable_and_is_reported():
    r = _run("tpu", "--device", "cpu")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "proxyaug tensor tests on: cpu" in r.stdout


def test_to_device_blocks_on_a_copy_to_the_host(monkeypatch):
    """non_blocking only from the host: a non-blocking copy to the host could be read before it lands
    ("meta" stands in for an accelerator; the spy answers for it)."""
    import torch

    from proxyaug._device import to_device

    calls = []

    def spy(self, *args, **kwargs):
        calls.append((self.device.type, str(args[0]) if args else None, kwargs.get("non_blocking", False)))
        return torch.zeros(self.shape, dtype=self.dtype)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    to_device(torch.empty(3, device="meta"), torch.device("cpu"))
    to_device(torch.arange(3), torch.device("meta"))
    assert calls == [("meta", "cpu", False), ("cpu", "meta", True)]
