"""The study's arm kinds, one module each, found by name in [`ARMS`][benchmarks.study.arms.base.ARMS].

A new kind: a module here with a class derived from [`Arm`][benchmarks.study.arms.base.Arm] (or
``RefreshingArm`` when it runs a refresh), decorated with ``@register``, and one import line below.
The order of the imports is the order of ``KINDS`` (and of the kinds listed in errors).
"""

# isort: off  (each import registers its kind, in this order)
from . import baseline  # noqa: F401
from . import proxy  # noqa: F401
from . import random_mask  # noqa: F401
from . import random_erasing  # noqa: F401
from . import cutout  # noqa: F401
from . import keepaugment  # noqa: F401
from . import thesis_protocol  # noqa: F401
from . import instep  # noqa: F401
from . import guided  # noqa: F401
# isort: on
from .base import ARMS, Arm, Context, Round, arm_kind, register
from .keepaugment import keep_cut
from .random_mask import roll_maps
from .refreshing import PROXY_DEFAULTS, RefreshingArm

KINDS = tuple(ARMS)

__all__ = ["ARMS", "KINDS", "PROXY_DEFAULTS", "Arm", "Context", "RefreshingArm", "Round", "arm_kind", "keep_cut", "register", "roll_maps"]
