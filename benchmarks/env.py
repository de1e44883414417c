"""The machine a benchmark ran on, for its JSON and report."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any, Dict, Optional, Union

import torch

import proxyaug as pa


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def version(name: str) -> Optional[str]:
    """The installed version of the distribution ``name``, ``None`` when it is not installed."""
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


VERSIONS = ("torch", "torchvision", "timm", "kornia", "grad-cam", "proxyaug")


def environment(device: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Machine, device, versions and commit, for every benchmark's JSON and report.

    ``device`` is the GPU's name on CUDA, else ``"CPU: <model>"``; ``versions`` names torch,
    torchvision, timm, kornia, grad-cam and proxyaug (``None`` where one is not installed).

    Examples:
        >>> env = environment("cpu")
        >>> env["device"].startswith("CPU: "), env["versions"]["proxyaug"] == pa.__version__
        (True, True)
    """
    dev = torch.device(device)
    versions = {n: version(n) for n in VERSIONS}
    versions.update(torch=torch.__version__, proxyaug=pa.__version__)  # what runs, even from a stale editable install
    return {
        "machine": f"{cpu_model()} ({platform.machine()}, {platform.system()})", "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU: {cpu_model()}",
        "python": platform.python_version(), "commit": git_commit(), "versions": versions,
    }
