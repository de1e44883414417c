"""Speed of proxyaug against plain inference, pytorch-grad-cam, a training step and the thesis.

Every comparison is measured side by side in one process, on the same model, batch and layer:

1. ``maps``: map throughput (images/s) of a plain forward pass under ``no_grad`` (the floor),
   proxyaug per native method, and pytorch-grad-cam's same method; ratios and peak memory.
2. ``transform``: ``ProxyTransform`` (each mode) against one training step of ResNet-18 on the
   same batch.
3. ``e2e``: a short training run with the thesis schedule against the same run without proxy.
4. ``thesis``: time to make about 1.2k Grad-CAM++ maps (the thesis reports ~9 s, and as long
   again to write the proxy images to disk).
5. ``bank``: bytes per image, and what that means for ImageNet-1k.
6. ``metrics``: ``proxyaug.metrics`` (batched) against torchcam 0.5's and pytorch-grad-cam's
   metrics on the same model, images and maps.

Method (``benchmarks/README.md``): warm-up runs, then ``repeats`` rounds in which every compared
callable is timed once in steady state (right after an untimed call of itself), in an order
rotated each round so that drift of the machine weighs on all alike, the device synchronised
inside the timed region; the median and the spread (min..max) are reported; fixed
seeds; the machine, versions and commit go into the JSON. Run:

    python -m benchmarks.speed --preset cpu     # a few minutes on 2 CPU cores
    python -m benchmarks.speed --preset gpu     # on a CUDA machine
    python -m benchmarks.speed --preset cpu --cases metrics --merge   # one case, into the existing file

It writes ``benchmarks/results/speed-<preset>.json`` and a markdown table generated from it.

Modules: ``presets``, ``measure`` (the timing), ``cases`` (one function per case, ``CASES``),
``report`` (targets, verdicts, the markdown table), ``cli``; the machine is ``benchmarks.env``.
"""

from .cases import CASES, PGC_CLASSES
from .cli import main
from .measure import measure, measure_interleaved
from .presets import PRESETS
from .report import TARGETS, render, verdicts

__all__ = ["CASES", "PGC_CLASSES", "PRESETS", "TARGETS", "main", "measure", "measure_interleaved", "render", "verdicts"]
