"""The learning-curve study's plan: the baseline tuned per size on validation, then every arm.

With ``sizes`` and ``steps`` set, a study's runs are (dataset, model, size, budget, seed, arm).
With ``tune`` set, each (dataset, model, size) first trains the baseline at the longest budget
for every learning rate x weight decay of ``tune`` on ``tune_seeds`` (seeds the study does not
report), with ``skip_test``: the test split is never read. The setting with the highest mean
final validation accuracy (ties: the first in the grid) is that size's, shared by every arm and
budget of it. Each run's settings are a copy of the study with ``sizes = [n]``, ``steps = [S]``
and the chosen ``lr`` / ``weight_decay`` (its key holds them).
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from .config import Study, arm_settings

__all__ = ["Planned", "at", "baseline_arm", "tuning_grid", "tuning_runs", "choose", "axis_runs"]


class Planned(NamedTuple):
    """One run of a plan: ``(dataset, model, arm settings, seed)``, its settings (``study``, a copy
    with this run's size, budget and optimiser) and its phase (``"tune"`` or ``"main"``)."""

    run: Tuple[str, str, Dict[str, Any], int]
    study: Study
    phase: str


def at(study: Study, size: int, steps: int, **changes: Any) -> Study:
    """``study`` narrowed to one size and one budget (and ``changes``), as one run sees it."""
    return dataclasses.replace(study, sizes=[size], steps=[steps], **changes)


def baseline_arm(study: Study) -> Dict[str, Any]:
    """The arm the tuning trains: the study's first arm of kind ``none`` (kept by ``select_arms``)."""
    return study.tune_arm or next(a for a in study.arms if a["kind"] == "none")


def select_arms(study: Study, names: List[str]) -> Study:
    """``study`` running only the arms named (``--arms``). The tuning still trains the config's
    baseline: an arm run without the baseline gets the settings tuned for it."""
    known = [a["name"] for a in study.arms]
    missing = sorted(set(names) - set(known))
    if missing:
        raise ValueError(f"--arms {missing} not in the config; it has {sorted(known)}")
    tune_arm = baseline_arm(study) if study.tune else None
    return dataclasses.replace(study, arms=[a for a in study.arms if a["name"] in names], tune_arm=tune_arm)


def tuning_grid(study: Study) -> List[Dict[str, float]]:
    """The ``{"lr", "weight_decay"}`` settings tried, in grid order (a missing key: the study's value).

    Examples:
        >>> tuning_grid(Study(tune={"lr": [0.1, 0.05]}, weight_decay=5e-4))
        [{'lr': 0.1, 'weight_decay': 0.0005}, {'lr': 0.05, 'weight_decay': 0.0005}]
    """
    tune = study.tune or {}
    lrs, wds = tune.get("lr", [study.lr]), tune.get("weight_decay", [study.weight_decay])
    return [{"lr": float(lr), "weight_decay": float(wd)} for lr, wd in itertools.product(lrs, wds)]


def tuning_runs(study: Study) -> List[Planned]:
    """The tuning runs: per (dataset, model, size), the baseline at the longest budget for every
    setting of the grid and tune seed, with ``skip_test``."""
    if not study.tune:
        return []
    arm, longest = arm_settings(baseline_arm(study), study), max(study.steps or [])
    return [Planned((d, m, arm, seed), at(study, size, longest, skip_test=True, explain=0, **g), "tune")
            for d in study.datasets for m in study.models for size in study.sizes or [] for g in tuning_grid(study) for seed in study.tune_seeds]


def choose(study: Study, records: List[Dict[str, Any]]) -> Optional[Dict[Tuple[str, str, int], Dict[str, Any]]]:
    """Each (dataset, model, size)'s setting: the highest mean final validation accuracy over the
    tune seeds (ties: the first of the grid), with every setting's mean; ``None`` while a tuning
    run is missing. Only validation accuracy is read (the tuning runs have no test accuracy)."""
    by = {(r["dataset"], r["model"], r["subset_size"], r["lr"], r["weight_decay"], r["seed"]): r["val_acc"]
          for r in records if r.get("phase") == "tune"}
    out: Dict[Tuple[str, str, int], Dict[str, Any]] = {}
    for d, m, size in itertools.product(study.datasets, study.models, study.sizes or []):
        tried = []
        for g in tuning_grid(study):
            vals = [by.get((d, m, size, g["lr"], g["weight_decay"], s)) for s in study.tune_seeds]
            if any(v is None for v in vals):
                return None
            tried.append({**g, "val_acc": statistics.fmean(vals)})
        best = max(tried, key=lambda t: t["val_acc"])  # max keeps the first of equal values
        out[(d, m, size)] = {"lr": best["lr"], "weight_decay": best["weight_decay"], "val_acc": best["val_acc"], "tried": tried}
    return out


def axis_runs(study: Study, chosen: Optional[Dict[Tuple[str, str, int], Dict[str, Any]]]) -> List[Planned]:
    """The study's runs over sizes and budgets, seed by seed (so finished seeds hold every pair),
    each with its size's tuned ``lr`` / ``weight_decay`` (``chosen``; the study's own without ``tune``)."""
    runs = []
    for d, m, seed, size, steps in itertools.product(study.datasets, study.models, study.seeds, study.sizes or [], study.steps or []):
        opt = {k: chosen[(d, m, size)][k] for k in ("lr", "weight_decay")} if chosen else {}
        one = at(study, size, steps, **opt)
        runs += [Planned((d, m, arm_settings(a, study), seed), one, "main") for a in study.arms]
    return runs
