"""A study's settings: the ``Study`` dataclass, presets and config files (TOML / JSON), arm tables.

Top-level keys of a config file are ``Study`` fields; each ``[[arms]]`` table is one arm: ``name``,
``kind`` (a registered arm kind), optionally ``schedule``, ``compare`` (reporting only: also
compare this arm with these arms) and ``models`` (the arm runs only on these of the study's
models; neither enters a run's key), and the settings its kind takes (``defaults`` of its class).
A list-valued setting expands into one arm per value (a grid).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from typing import Any, Dict, Iterable, List, Optional

import proxyaug as pa

from .arms import ARMS, arm_kind
from .models import VIT_SHAPE

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
COMMON_ARM_KEYS = ("name", "kind", "schedule", "compare", "models")
OPTIMIZERS = ("sgd", "adamw")


@dataclasses.dataclass
class Study:
    """A study's settings: what a config file or the flags give."""

    datasets: List[str] = dataclasses.field(default_factory=lambda: ["digits"])
    models: List[str] = dataclasses.field(default_factory=lambda: ["cnn"])
    arms: List[Dict[str, Any]] = dataclasses.field(default_factory=lambda: [{"name": "baseline", "kind": "none"}, {"name": "proxy", "kind": "proxy"}])
    seeds: List[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    schedule: str = "3,p,4,p,4,p,2"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    size: int = 32
    val_fraction: float = 0.2
    test_fraction: float = 0.3
    split_seed: int = 0
    cue_strength: float = 0.9
    pretrained: bool = False
    small_stem: Optional[bool] = None
    root: str = "data"
    device: str = "cpu"
    workers: int = 0
    threads: Optional[int] = None
    grids: int = 8
    explain: int = 0
    explain_method: str = "eigengradcam"
    explain_steps: int = 10
    out: str = "runs/study"
    pool_size: Optional[int] = None  # a stratified seeded subset of the pool (train + validation); None: all of it
    skip_test: bool = False  # never evaluate on the test split (a regime search chooses on validation only)
    # the learning-curve axes (benchmarks/study/budget.py): training-set sizes and step budgets
    sizes: Optional[List[int]] = None  # nested class-balanced subsets of the pool, per seed (train + validation)
    steps: Optional[List[int]] = None  # optimisation budgets in steps, the same at every size; a schedule unit is steps / units
    eval_every: Optional[int] = None  # with steps: evaluate every this many steps (and at the end); None: after every unit
    val_cap: Optional[int] = None  # with sizes: at most this many validation images per class
    lr_schedule: str = "onecycle"  # or "cosine": linear warm-up over `warmup` of the steps, then cosine to 0
    warmup: float = 0.05
    tune: Optional[Dict[str, List[float]]] = None  # {"lr": [...], "weight_decay": [...]}: the baseline tuned per size on validation
    tune_seeds: List[int] = dataclasses.field(default_factory=lambda: [100])
    optimizer: str = "sgd"  # SGD with Nesterov momentum, or "adamw" (AdamW: lr and weight_decay as given; momentum unused)
    # RQ2 (benchmarks/study/compare.py): maps on this many fixed test images and robustness on all of them, after training
    compare: int = 0
    compare_patch: int = 4  # patch drop: patch side in pixels (divides size)
    compare_grids: List[int] = dataclasses.field(default_factory=lambda: [2, 4, 7])  # patch shuffle: grid sizes (each divides size)
    # not a setting: the arm the tuning trains when ``--arms`` leaves the baseline out (``select_arms``)
    tune_arm: Optional[Dict[str, Any]] = dataclasses.field(default=None, repr=False)

    def training_settings(self) -> Dict[str, Any]:
        """What every run of the study shares (part of each run's identity)."""
        keys = ("schedule", "lr", "momentum", "weight_decay", "batch_size", "size", "val_fraction", "test_fraction",
                "split_seed", "cue_strength", "pretrained", "small_stem")
        out = {k: getattr(self, k) for k in keys}
        # listed only when set, so the keys of runs made before these settings existed stay valid
        out.update({k: getattr(self, k) for k in ("pool_size", "skip_test", "sizes", "steps", "eval_every", "val_cap")
                    if getattr(self, k) not in (None, False)})
        if self.lr_schedule != "onecycle":
            out.update(lr_schedule=self.lr_schedule, warmup=self.warmup)
        if self.optimizer != "sgd":  # likewise: listed only when not the default
            out["optimizer"] = self.optimizer
        return out

    def explain_settings(self) -> Dict[str, Any]:
        """How explanations are measured (``benchmarks.study.explain``): part of a run's identity when
        on (a record holds what was measured), absent when off so earlier keys stay valid."""
        return {k: getattr(self, k) for k in ("explain", "explain_method", "explain_steps")} if self.explain else {}

    def compare_settings(self) -> Dict[str, Any]:
        """How RQ2's comparison is measured (``benchmarks.study.compare``): part of a run's identity
        when on, absent when off, as ``explain_settings``."""
        return {"compare": self.compare, "compare_patch": self.compare_patch, "compare_grids": list(self.compare_grids)} if self.compare else {}


def read_config(path: str) -> Dict[str, Any]:
    """A ``.json`` or ``.toml`` file as a dict."""
    with open(path, "rb") as f:
        if path.endswith(".json"):
            return json.load(f)
        try:
            import tomllib
        except ModuleNotFoundError:  # Python < 3.11
            import tomli as tomllib  # type: ignore[no-redef]
        return tomllib.load(f)


def expand_arms(arms: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Validate arm tables and expand list-valued settings into one arm per combination.

    Examples:
        >>> [a["name"] for a in expand_arms([{"name": "p", "kind": "proxy", "mode": ["blend", "black"]}])]
        ['p-mode=blend', 'p-mode=black']
    """
    keys = set(COMMON_ARM_KEYS).union(*(cls.defaults for cls in ARMS.values()))  # the registry as it is now
    out: List[Dict[str, Any]] = []
    for i, arm in enumerate(arms):
        arm = dict(arm)
        unknown = set(arm) - keys
        if unknown:
            raise ValueError(f"arms[{i}] has unknown settings {sorted(unknown)}; expected some of {sorted(keys)}.")
        kind = arm.get("kind")
        if kind not in ARMS:
            raise ValueError(f"arms[{i}].kind={kind!r} is not valid; expected one of {', '.join(ARMS)}.")
        arm.setdefault("name", kind)
        grid = {k: v for k, v in arm.items() if isinstance(v, list) and k not in ("compare", "models")}
        for values in itertools.product(*grid.values()):
            one = {**arm, **dict(zip(grid, values))}
            if grid:
                one["name"] = arm["name"] + "-" + ",".join(f"{k}={v}" for k, v in zip(grid, values))
            out.append(one)
    names = [a["name"] for a in out]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique; got {names}.")
    return out


def arm_settings(arm: Dict[str, Any], study: Study) -> Dict[str, Any]:
    """An arm with every setting its kind takes filled in (settings it does not take are dropped).

    Examples:
        >>> arm_settings({"name": "b", "kind": "none", "mode": "black"}, Study(schedule="1,p,1"))
        {'name': 'b', 'kind': 'none', 'schedule': '1,p,1'}
    """
    full = {"name": arm["name"], "kind": arm["kind"], "schedule": arm.get("schedule", study.schedule)}
    if arm.get("compare"):  # reporting only: also compare this arm with these arms
        full["compare"] = list(arm["compare"])
    full.update({k: arm.get(k, v) for k, v in arm_kind(arm["kind"]).defaults.items()})
    if "observe" in full and not full["observe"]:  # listed only when on
        full.pop("observe")
    if full.get("budget", "") in (None, "thesis"):  # listed only when not the thesis rule: older runs' keys stay valid
        full.pop("budget")
    if full.get("views") == "all":  # in-step maps of what the step showed (0.1's capture): listed only when not, likewise
        full.pop("views")
    return full


def load_study(config: Optional[str], overrides: Dict[str, Any]) -> Study:
    """The study of a preset name or a config file, with ``overrides`` (``None`` values ignored)."""
    raw: Dict[str, Any] = {}
    if config is not None:
        path = config if os.path.exists(config) or os.sep in config else os.path.join(CONFIG_DIR, config + ".toml")
        if not os.path.exists(path):
            presets = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".toml"))
            raise FileNotFoundError(f"config {config!r} not found; give a .toml/.json path or a preset: {', '.join(presets)}.")
        raw = read_config(path)
    declared = list(raw.get("models", Study().models))  # the file's models: --models may narrow them
    raw.update({k: v for k, v in overrides.items() if v is not None})
    fields = {f.name for f in dataclasses.fields(Study)} - {"tune_arm"}
    unknown = set(raw) - fields
    if unknown:
        raise ValueError(f"unknown study settings {sorted(unknown)}; expected some of {sorted(fields)}.")
    study = Study(**raw)
    study.arms = expand_arms(study.arms)
    epochs = pa.ProxySchedule.parse(study.schedule).epochs
    for arm in study.arms:
        e = pa.ProxySchedule.parse(arm.get("schedule", study.schedule)).epochs
        if e != epochs:
            raise ValueError(f"arm {arm['name']!r} has a schedule of {e} epochs, the study {epochs}: every arm trains for the same epochs.")
    if not isinstance(study.explain, int) or study.explain < 0:
        raise ValueError(f"explain={study.explain!r} is not valid; expected the number of test images to explain (0: off).")
    if study.explain and study.skip_test:
        raise ValueError(f"explain={study.explain} measures on test images, which skip_test=True forbids; set explain = 0 for a search.")
    if not isinstance(study.explain_steps, int) or study.explain_steps < 1:
        raise ValueError(f"explain_steps={study.explain_steps!r} is not valid; expected an int >= 1 (deletion / insertion steps).")
    try:
        pa.MapSpec(method=study.explain_method)  # an unknown method fails here, before training
    except ValueError as e:
        raise ValueError(f"explain_method: {e}") from e
    if len(study.seeds) < 1:
        raise ValueError("seeds is empty; expected at least one seed (three or more for a comparison).")
    if study.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={study.optimizer!r} is not valid; expected one of {', '.join(map(repr, OPTIMIZERS))}.")
    if "vit" in study.models and study.size % VIT_SHAPE["patch_size"]:
        raise ValueError(f"size={study.size} is not divisible by the ViT's patch size {VIT_SHAPE['patch_size']}; "
                         f"expected a multiple of it for model 'vit' (28 for Fashion-MNIST).")
    check_arm_models(study, declared)
    check_compare(study)
    check_axes(study)
    return study


def check_arm_models(study: Study, declared: List[str]) -> None:
    """Each arm's ``models``: a non-empty list of the config's models (``declared``, before
    ``--models`` narrowed them); not with ``tune``, which tunes the baseline on every model."""
    for arm in study.arms:
        if "models" not in arm:
            continue
        models = arm["models"]
        if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
            raise ValueError(f"arm {arm['name']!r} has models={models!r}; expected a non-empty list of the study's models {declared}.")
        unknown = [m for m in models if m not in declared and m not in study.models]
        if unknown:
            raise ValueError(f"arm {arm['name']!r} has models={models!r}: {unknown} not in the study's models {declared}; expected some of them.")
        if study.tune is not None:
            raise ValueError(f"arm {arm['name']!r} has models={models!r}, which tune does not support (it tunes the baseline on every model); "
                             "leave models out of a tuned study.")


def check_compare(study: Study) -> None:
    """RQ2's settings (``compare``, ``compare_patch``, ``compare_grids``), checked before any run."""
    if isinstance(study.compare, bool) or not isinstance(study.compare, int) or study.compare < 0:
        raise ValueError(f"compare={study.compare!r} is not valid; expected the number of test images to compare maps on (0: off).")
    if not study.compare:
        return
    if study.skip_test:
        raise ValueError(f"compare={study.compare} measures on test images, which skip_test=True forbids; set compare = 0 for a search.")
    patch, grids = study.compare_patch, study.compare_grids
    divisors = [d for d in range(1, study.size + 1) if study.size % d == 0]
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1 or study.size % patch:
        raise ValueError(f"compare_patch={patch!r} does not divide size={study.size}; expected one of {divisors}.")
    if not isinstance(grids, list) or not grids or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 or study.size % g for g in grids):
        raise ValueError(f"compare_grids={grids!r} is not valid for size={study.size}; expected a non-empty list of grid sizes from {divisors}.")


def _ints(name: str, values: Any, low: int) -> None:
    if values is None:
        return
    if not isinstance(values, list) or not values or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in values):
        raise ValueError(f"{name}={values!r} is not valid; expected None or a non-empty list of ints >= {low}.")
    if len(set(values)) != len(values):
        raise ValueError(f"{name}={values!r} repeats a value; expected each once.")


def check_axes(study: Study) -> None:
    """The learning-curve settings (sizes, steps, tuning) of ``study``, checked before any run."""
    from .budget import eval_after

    _ints("sizes", study.sizes, 1)
    _ints("steps", study.steps, 1)
    if bool(study.sizes) != bool(study.steps):
        raise ValueError(f"sizes={study.sizes!r} and steps={study.steps!r}: a learning-curve study sets both (one alone is not supported).")
    if study.lr_schedule not in ("onecycle", "cosine"):
        raise ValueError(f"lr_schedule={study.lr_schedule!r} is not valid; expected 'onecycle' or 'cosine'.")
    if study.eval_every is not None and not study.steps:
        raise ValueError(f"eval_every={study.eval_every!r} counts steps; it needs a step budget (steps = [...]).")
    if study.val_cap is not None and not study.sizes:
        raise ValueError(f"val_cap={study.val_cap!r} caps the validation part of a size's subset; it needs sizes = [...].")
    for budget in study.steps or []:
        for arm in study.arms:
            units = pa.ProxySchedule.parse(arm.get("schedule", study.schedule)).epochs
            if study.eval_every is not None:
                eval_after(budget, units, study.eval_every)  # checks steps % units and eval_every
            elif budget % units:
                raise ValueError(f"steps={budget} does not divide into the {units} units of arm {arm['name']!r}'s schedule.")
    if study.tune is not None:
        if not study.sizes:  # sizes and steps come together (checked above)
            raise ValueError("tune tunes the baseline per size at the longest budget; it needs sizes = [...] and steps = [...].")
        if not isinstance(study.tune, dict) or not study.tune or set(study.tune) - {"lr", "weight_decay"}:
            raise ValueError(f"tune={study.tune!r} is not valid; expected a table with 'lr' and / or 'weight_decay' lists.")
        for k, values in study.tune.items():
            if not isinstance(values, list) or not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in values):
                raise ValueError(f"tune.{k}={values!r} is not valid; expected a non-empty list of numbers >= 0.")
        if not any(a["kind"] == "none" for a in study.arms):
            raise ValueError("tune tunes the baseline (an arm of kind 'none'); the study has none.")
        if set(study.tune_seeds) & set(study.seeds):
            raise ValueError(f"tune_seeds={study.tune_seeds} share seeds with seeds={study.seeds}; expected seeds the study does not report.")
