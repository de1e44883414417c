"""proxyaug: Proxy Attention, model-in-the-loop attention-guided augmentation for PyTorch.

Examples:
    >>> import proxyaug as pa
    >>> sched = pa.ProxySchedule.parse("5,p,9,p,9,p,4")
    >>> sched.should_refresh(5), sched.should_refresh(6)
    (True, False)
"""

__version__ = "0.2.0"

from . import attention, capture, functional, metrics, mixing, protocol, selection, viz
from ._refresh import refresh
from ._report import RefreshReport
from .attention import MapSpec, attention_maps, find_target_layer
from .bank import MaskBank
from .capture import MapCapture
from .dataset import ProxyDataset
from .guided import KeepCutout, SalientMix
from .schedule import EverySchedule, FixedSchedule, PlateauSchedule, ProxySchedule
from .protocol import Refreshable
from .sampler import ProxySampler
from .transform import ProxyTransform

__all__ = [
    "__version__",
    "attention",
    "capture",
    "functional",
    "metrics",
    "mixing",
    "protocol",
    "selection",
    "viz",
    "MapSpec",
    "MaskBank",
    "MapCapture",
    "ProxyTransform",
    "SalientMix",
    "KeepCutout",
    "ProxyDataset",
    "ProxySampler",
    "RefreshReport",
    "Refreshable",
    "refresh",
    "attention_maps",
    "find_target_layer",
    "ProxySchedule",
    "FixedSchedule",
    "EverySchedule",
    "PlateauSchedule",
]
