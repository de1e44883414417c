"""The machine a benchmark ran on, for its JSON and report."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any, Dict, Optional

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


def environment(device: str = "cpu") -> Dict[str, Any]:
    """Machine, device, versions and commit."""
    dev = torch.device(device)
    return {
        "machine": f"{cpu_model()} ({platform.machine()}, {platform.system()})", "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "python": platform.python_version(), "torch": torch.__version__, "proxyaug": pa.__version__, "commit": git_commit(),
    }
