"""Explanation metrics, batched on the maps' device: does a map point at a known region
(energy-based pointing game, pointing game), does the model need what it points at (deletion and
insertion curves, average drop / increase in confidence), how concentrated is it (sparsity,
entropy); and comparisons of two models: do their maps agree (Spearman, top-k IoU), how robust
are they to dropped and shuffled patches, do they err on the same images (error consistency).
Each function has a class that accumulates it over the batches of a validation loop: a
``torchmetrics.Metric`` (``update`` / ``compute`` / ``reset``, summed over ranks, in a
``MetricCollection`` or Lightning's ``self.log``).

Examples:
    >>> import proxyaug as pa
    >>> maps = torch.tensor([[[3.0, 1.0], [0.0, 0.0]]])
    >>> pa.metrics.energy_in_region(maps, maps > 2), pa.metrics.sparsity(maps)
    (tensor([0.7500]), tensor([3.]))
"""

import torch  # noqa: F401  (the module docstring's example)

from .accumulate import (
    AverageDropIncrease,
    DeletionAUC,
    EnergyInRegion,
    Entropy,
    InsertionAUC,
    PointingGame,
    Sparsity,
)
from .accumulate_compare import ErrorConsistency, MapSpearman, OcclusionCurve, ShuffleAccuracy, TopKIoU
from .agreement import map_spearman, topk_iou
from .concentration import entropy, sparsity
from .consistency import error_consistency
from .faithfulness import (
    BASELINES,
    auc,
    average_drop_increase,
    deletion_curve,
    insertion_curve,
)
from .localisation import energy_in_region, pointing_game
from .robustness import DROP_FRACTIONS, occlusion_curve, shuffle_accuracy

__all__ = [
    "energy_in_region", "pointing_game", "deletion_curve", "insertion_curve", "auc", "average_drop_increase",
    "sparsity", "entropy", "BASELINES",
    "EnergyInRegion", "PointingGame", "DeletionAUC", "InsertionAUC", "AverageDropIncrease", "Sparsity", "Entropy",
    "map_spearman", "topk_iou", "occlusion_curve", "shuffle_accuracy", "error_consistency", "DROP_FRACTIONS",
    "MapSpearman", "TopKIoU", "OcclusionCurve", "ShuffleAccuracy", "ErrorConsistency",
]
