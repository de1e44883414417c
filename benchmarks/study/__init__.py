"""The accuracy study: does Proxy Attention help? Fair arms, controls and the thesis' protocol.

Every run of a study trains one model on one dataset with one *arm* and one seed. All arms of
a study share the dataset's fixed split (pool -> train / validation, test held out), the number
of epochs, the optimizer and LR schedule, and the number of images per epoch; seed ``s`` of every
arm starts from the same weights. Runs are paired by seed, so each arm is compared with the
baseline by the paired difference and its 95 % t-interval.

Arm kinds (``kind`` in a config's ``[[arms]]`` table), one module each in ``arms/``: ``none``
(the baseline), ``proxy`` (Proxy Attention), the controls ``random-mask``, ``random-erasing``,
``cutout`` and ``keepaugment`` (matched to the proxy masks of the same run), and
``thesis-protocol`` (the split re-drawn every round, as the thesis' code did).

Output (``--out``): ``runs.csv`` (one row per run), ``runs.jsonl`` (the same plus curves and
refreshes), ``summary.json``, ``report.md`` (which shows the pictures), ``accuracy-*.png``,
``bars.png``, ``differences.png`` (an arm has one colour in all of them) and proxy grids per
refresh under ``grids/`` (original | map | proxy, the replaced region outlined in cyan with its
area | the change; each row's true and predicted class, a caption). Finished runs are skipped when the command is run again with the same
settings, and an interrupted run resumes from its last epoch checkpoint (``checkpoints/``).

With ``sizes`` and ``steps`` a study draws learning curves (``--preset fashion-curves``): nested
class-balanced subsets per seed, the same step budget at every size, the baseline tuned per size on
validation first (``budget``, ``tuning``, ``curves``, ``curves_report``, ``curves_plots``).

With ``compare = N`` (``--preset fashion-rq2``) every run is also measured after training for RQ2,
"does it attend like a ViT?": maps, right / wrong flags and patch drop / shuffle robustness, saved
per run; a model ``"vit"`` (a small ViT) and arms restricted to some models (``models``) put the
ViT's baseline beside the CNN arms, and the report pairs each CNN arm with it by seed
(``compare``, ``compare_stats``, ``compare_report``, ``compare_plots``).

Run ``python -m benchmarks.study --preset demo`` (``--help`` for options; presets and the config
format are in ``benchmarks/configs/``); ``python -m benchmarks.train`` is the same command.

Modules: ``config`` (settings, presets, arm tables), ``models``, ``arms`` (the arm kinds and their
registry), ``loop`` (one run), ``runner`` (every run, ``runs.jsonl`` / ``runs.csv``), ``stats``,
``report``, ``plots``, ``grids``, ``cli``, the learning curves' ``budget``, ``tuning``, ``curves``,
``curves_report`` and ``curves_plots``, RQ2's ``compare``, ``compare_stats``, ``compare_report`` and
``compare_plots``; the data are ``benchmarks.data``.
"""

from .arms import ARMS, KINDS, PROXY_DEFAULTS, Arm, RefreshingArm, arm_kind, keep_cut, register, roll_maps
from .cli import main, parse_args
from .config import CONFIG_DIR, Study, arm_settings, expand_arms, load_study
from .loop import Run, accuracy, load_checkpoint, train_run
from .models import SmallCNN, build_model, small_image_stem
from .plots import plots
from .report import markdown_report, report
from .runner import CSV_COLUMNS, run_key, run_study
from .stats import describe, paired, summarize, verdict

__all__ = [
    "ARMS", "CONFIG_DIR", "CSV_COLUMNS", "KINDS", "PROXY_DEFAULTS", "Arm", "RefreshingArm", "Run", "SmallCNN", "Study",
    "accuracy", "arm_kind", "arm_settings", "build_model", "describe", "expand_arms", "keep_cut", "load_checkpoint",
    "load_study", "main", "markdown_report", "paired", "parse_args", "plots", "register", "report", "roll_maps", "run_key",
    "run_study", "small_image_stem", "summarize", "train_run", "verdict",
]
