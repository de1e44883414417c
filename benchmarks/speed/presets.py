"""The speed benchmark's presets: ``cpu``, ``gpu`` and ``smoke`` (seconds, for the test suite).

``cases`` is what a preset runs when ``--cases`` is not given; ``methods_large`` the methods for
every model after the first.
"""

from __future__ import annotations

from typing import Any, Dict

ALL_CASES = ["maps", "transform", "e2e", "thesis", "bank", "metrics", "formats", "transformer", "guided"]

PRESETS: Dict[str, Dict[str, Any]] = {
    "cpu": {
        # 3 rounds, not 5: this 2-core machine is shared, and a batch of 32 at 224 px takes seconds per call
        "device": "cpu", "size": 224, "batch": 32, "warmup": 1, "repeats": 3,
        "models": ["resnet18", "efficientnet_b0", "resnet50"],
        "methods": ["gradcam", "gradcam++"],  # the methods all three peers have (captum: Grad-CAM only)
        "transform_batch": 32, "thesis_images": 1200, "thesis_batch": 64,
        "e2e_schedule": "3,p,4,p,4,p,2", "e2e_seeds": [0, 1],
        "metrics_batch": 8, "metrics_steps": 16, "metrics_repeats": 3,  # 16 steps: 224 * 224 pixels divide evenly, as torchcam needs
        "vit_shape": "vit_s_16",
        "cases": ["maps", "transform", "e2e", "thesis", "bank", "metrics"],  # formats, transformer, guided: `--cases ... --merge`
    },
    "gpu": {
        "device": "cuda", "size": 224, "batch": 64, "warmup": 3, "repeats": 10,
        "models": ["resnet18", "resnet50", "efficientnet_b0", "vit_base_patch16_224"],
        "methods": ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "eigengradcam"],
        "transform_batch": 256, "thesis_images": 1200, "thesis_batch": 128,
        "e2e_schedule": "3,p,4,p,4,p,2", "e2e_seeds": [0, 1, 2],
        "metrics_batch": 16, "metrics_steps": 16, "metrics_repeats": 5,
        "formats_model": "resnet50", "vit_shape": "vit_b_16", "cases": ALL_CASES,
    },
    # seconds: for the test suite, proves the script runs end to end
    "smoke": {
        "device": "cpu", "size": 64, "batch": 2, "warmup": 0, "repeats": 1,
        "models": ["resnet18"], "methods": ["gradcam", "gradcam++", "eigencam"],
        "transform_batch": 2, "thesis_images": 8, "thesis_batch": 4,
        "e2e_schedule": "1,p,1", "e2e_seeds": [0],
        "metrics_batch": 2, "metrics_steps": 16, "metrics_repeats": 1,
        "vit_shape": "vit_tiny_test", "cases": ALL_CASES,
    },
}
