"""proxyaug: Proxy Attention, model-in-the-loop attention-guided augmentation for PyTorch.

Examples:
    >>> import proxyaug as pa
    >>> sched = pa.ProxySchedule.parse("5,p,9,p,9,p,4")
    >>> sched.should_refresh(5), sched.should_refresh(6)
    (True, False)
"""

__version__ = "0.1.0"

from . import cpu_path, distributed, functional, items, layout, metrics, mistakes, protocol, selection, viz
from .attention import MapSpec, attention_maps, find_target_layer
from .bank import MaskBank
from .capture import MapCapture
from .dataset import ProxyDataset
from .refresh import RefreshReport, refresh
from .schedule import EverySchedule, FixedSchedule, PlateauSchedule, ProxySchedule
from .transform import ProxyTransform

__all__ = [
    "__version__",
    "functional",
    "metrics",
    "viz",
    "selection",
    "distributed",
    "protocol",
    "mistakes",
    "layout",
    "cpu_path",
    "items",
    "MapSpec",
    "MaskBank",
    "MapCapture",
    "ProxyTransform",
    "ProxyDataset",
    "RefreshReport",
    "refresh",
    "attention_maps",
    "find_target_layer",
    "ProxySchedule",
    "FixedSchedule",
    "EverySchedule",
    "PlateauSchedule",
]
