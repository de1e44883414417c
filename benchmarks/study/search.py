"""The regime search without a winner's curse: rank a grid's runs on validation, re-run the best on fresh seeds.

A grid study (e.g. ``--preset fashion-grid``) trains many settings of Proxy Attention with one seed
and ``skip_test = true``: the test split is never read, so choosing among them cannot leak it. Then

    python -m benchmarks.study.search --preset fashion-grid

ranks its runs by validation accuracy and writes, into the grid's folder, ``search.md`` (the
ranking, how many settings were tried, and what that does to the chance of a false "better")
and ``rerun.toml``: a study of the best ``--top`` settings on ``--seeds`` the grid did not use,
with the baseline and, for each, its random-mask control (the same refreshes, masks moved to
random places), compared on test as every study is.

Why: with N settings that all do nothing, the best of them still beats the baseline on validation
by about ``sigma * E[max of N standard normals]`` (``sigma``: the spread of one run's validation
accuracy), and picking it and testing it on the same numbers would call it "better" far more often
than 2.5 % of the time. On fresh seeds, each finalist's verdict is again a single test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .arms import arm_kind
from .config import Study, load_study
from .runner import load_done, plan

__all__ = ["expected_max", "rank", "noise_sd", "rerun_config", "search_markdown", "print_ranking", "main"]


def expected_max(n: int) -> float:
    """``E[max of n independent standard normal variables]`` (0 for one), by numerical integration.

    Examples:
        >>> round(expected_max(1), 4), round(expected_max(2), 4), round(expected_max(24), 3)
        (0.0, 0.5642, 1.948)
    """
    if n < 1:
        raise ValueError(f"n={n!r} is not valid; expected a count of settings >= 1.")
    if n == 1:
        return 0.0
    x = torch.linspace(-12.0, 12.0, 48001, dtype=torch.float64)
    density = n * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi) * torch.special.ndtr(x) ** (n - 1)
    return float(torch.trapezoid(x * density, x))


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def rank(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per arm (name, kind, settings, mean validation accuracy over its runs, runs), best first.

    Examples:
        >>> rank([{"arm": "a", "kind": "none", "settings": {}, "val_acc": 0.5}, {"arm": "b", "kind": "proxy", "settings": {}, "val_acc": 0.7}])[0]["arm"]
        'b'
    """
    arms: Dict[str, Dict[str, Any]] = {}
    for r in records:
        entry = arms.setdefault(r["arm"], {"arm": r["arm"], "kind": r["kind"], "settings": r["settings"], "vals": []})
        entry["vals"].append(r["val_acc"])
    out = [{**{k: v for k, v in e.items() if k != "vals"}, "val_acc": statistics.fmean(e["vals"]), "runs": len(e["vals"])} for e in arms.values()]
    return sorted(out, key=lambda e: (-e["val_acc"], e["arm"]))


def noise_sd(records: Sequence[Dict[str, Any]], other: Sequence[Dict[str, Any]] = ()) -> Tuple[float, str]:
    """The spread of one run's validation accuracy, and where it comes from.

    The pooled within-arm standard deviation over seeds of ``other`` (a multi-seed study of the
    same data and model), else of ``records`` when they have several seeds per arm; else the
    standard deviation of the grid's validation accuracies across settings, which also holds their
    real differences and so overstates the noise (a conservative bar).
    """
    for source, recs in (("the seeds of each arm of the study given", other), ("the seeds of each arm of the grid", records)):
        groups: Dict[Tuple[str, str, str], List[float]] = {}
        for r in recs:
            groups.setdefault((r["dataset"], r["model"], r["arm"]), []).append(r["val_acc"])
        pairs = [(len(v) - 1, statistics.variance(v)) for v in groups.values() if len(v) > 1]
        if pairs:
            dof = sum(d for d, _ in pairs)
            return math.sqrt(sum(d * var for d, var in pairs) / dof), f"{source} (pooled over {len(pairs)} arms)"
    vals = [r["val_acc"] for r in records if r["kind"] != "none"]
    if len(vals) < 2:
        return 0.0, "nothing (fewer than two settings)"
    return statistics.stdev(vals), "the spread of the grid's settings (also their real differences: a conservative bar)"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) to TOML.")


def _arm_table(arm: Dict[str, Any]) -> str:
    lines = ["[[arms]]"] + [f"{k} = {_toml(v)}" for k, v in arm.items() if v is not None]
    return "\n".join(lines)


def rerun_config(study: Study, finalists: Sequence[Dict[str, Any]], *, seeds: Sequence[int], out: str) -> str:
    """A study (TOML) re-running ``finalists`` on ``seeds`` with the baseline and their random-mask controls, test on."""
    default = Study()
    keep = {f.name: getattr(study, f.name) for f in dataclasses.fields(Study)
            if f.name not in ("arms", "seeds", "out", "skip_test", "tune_arm") and getattr(study, f.name) != getattr(default, f.name)}
    head = [f"# Written by python -m benchmarks.study.search from the grid in {study.out}: its best {len(finalists)} settings",
            "# on validation, re-run on fresh seeds with the baseline and their random-mask controls, compared on test.",
            f"out = {_toml(out)}", f"seeds = {_toml(list(seeds))}"]
    head += [f"{k} = {_toml(v)}" for k, v in keep.items() if v is not None]
    tables = [_arm_table({"name": "baseline", "kind": "none"})]
    control_keys = set(arm_kind("random-mask").defaults) | {"schedule"}
    for i, f in enumerate(finalists, 1):
        name = f"top{i}"
        settings = {k: v for k, v in f["settings"].items() if k not in ("compare",)}
        refreshing = arm_kind(f["kind"]).refreshes
        comment = f"# {name}: {f['arm']} in the grid, validation {100 * f['val_acc']:.2f} %"
        arm = {"name": name, "kind": f["kind"], **settings, **({"compare": [f"{name}-random-mask"]} if refreshing else {})}
        tables.append(comment + "\n" + _arm_table(arm))
        if refreshing:
            control = {k: v for k, v in settings.items() if k in control_keys}
            tables.append(_arm_table({"name": f"{name}-random-mask", "kind": "random-mask", **control}))
    return "\n".join(head) + "\n\n" + "\n\n".join(tables) + "\n"


def search_markdown(study: Study, ranked: Sequence[Dict[str, Any]], finalists: Sequence[Dict[str, Any]], *,
                    sd: float, sd_source: str, seeds: Sequence[int], rerun_path: str) -> str:
    """The search's report: the ranking, the number of settings tried and the winner's curse in numbers."""
    base = next((e for e in ranked if e["kind"] == "none"), None)
    tried = [e for e in ranked if e["kind"] != "none"]
    n, k = len(tried), len(finalists)
    e_max = expected_max(n) if n else 0.0
    lines = [f"# Regime search: {', '.join(study.datasets)} / {', '.join(study.models)}", "",
             f"- **Settings tried: {n}** (each with seed(s) {', '.join(map(str, study.seeds))}), next to the baseline; "
             "chosen on validation accuracy only. The test split was never read (`skip_test`: no test evaluation at all).",
             f"- Noise: one run's validation accuracy varies by about sigma = {100 * sd:.2f} pp, from {sd_source}."]
    if base is not None and tried:
        margin = tried[0]["val_acc"] - base["val_acc"]
        chance = 1 - _normal_cdf(margin / (sd * math.sqrt(2))) ** n if sd > 0 else float("nan")
        lines += [
            f"- Baseline: validation {100 * base['val_acc']:.2f} %. Best setting: {100 * tried[0]['val_acc']:.2f} % ({100 * margin:+.2f} pp).",
            f"- **Winner's curse**: if none of the {n} settings did anything, the best of them would still beat the baseline on "
            f"validation by about sigma x E[max of {n}] = {100 * sd:.2f} x {e_max:.2f} = {100 * sd * e_max:+.2f} pp. "
            f"A margin of {100 * margin:+.2f} pp or more arises from chance alone with probability about {chance:.0%} "
            "(independent settings, normal noise).",
        ]
    lines += [
        f"- **False \"better\"**: one setting chosen in advance and tested at 95 % has a 2.5 % chance of a false \"better\"; "
        f"the best of {n} tested on the numbers it was chosen on, up to 1 - 0.975^{n} = {1 - 0.975 ** n:.0%}. "
        f"Re-running only the best {k} on fresh seeds ({', '.join(map(str, seeds))}) and comparing on test puts each finalist's "
        f"verdict back at 2.5 %, and at most 1 - 0.975^{k} = {1 - 0.975 ** k:.1%} that any of the {k} is a false \"better\".",
        f"- Re-run: `python -m benchmarks.study --config {rerun_path}`.", "",
        "| rank | arm | kind | validation % | vs baseline, pp |", "|---:|---|---|---:|---:|",
    ]
    for i, e in enumerate(ranked, 1):
        diff = f"{100 * (e['val_acc'] - base['val_acc']):+.2f}" if base is not None else ""
        star = " (re-run)" if any(e["arm"] == f["arm"] for f in finalists) else ""
        lines.append(f"| {i} | {e['arm']}{star} | {e['kind']} | {100 * e['val_acc']:.2f} | {diff} |")
    return "\n".join(lines) + "\n"


def print_ranking(study: Study, records: Sequence[Dict[str, Any]], top: int = 10) -> Dict[str, Any]:
    """Print a grid's best arms by validation accuracy (what ``python -m benchmarks.study`` shows for a
    ``skip_test`` study) and return the ranking."""
    ranked = rank(records)
    print(f"\n{len(ranked)} arms ranked by validation accuracy (no test evaluation: skip_test); best {min(top, len(ranked))}:")
    for i, e in enumerate(ranked[:top], 1):
        print(f"  {i:2d}. {e['arm']:40s} val {100 * e['val_acc']:6.2f} %  ({e['runs']} runs)")
    print(f"choose with: python -m benchmarks.study.search --config <this study> (writes {study.out}/search.md, rerun.toml)")
    return {"ranking": ranked}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """``python -m benchmarks.study.search``: rank a finished grid, write ``search.md`` and ``rerun.toml``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.study.search", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="the grid's .toml / .json study file")
    p.add_argument("--preset", help="the grid's preset in benchmarks/configs/, e.g. fashion-grid")
    p.add_argument("--out", help="the grid's results folder (default: the config's out)")
    p.add_argument("--top", type=int, default=3, help="settings to re-run")
    p.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12], help="fresh seeds for the re-run (none of the grid's)")
    p.add_argument("--rerun-out", help="where the re-run's results go (default: <grid out>-rerun)")
    p.add_argument("--noise-from", help="runs.jsonl of a multi-seed study of the same data and model, for the noise sigma")
    args = p.parse_args(argv)
    if bool(args.config) == bool(args.preset):
        p.error("give --config or --preset (the grid's), one of them")
    study = load_study(args.config or args.preset, {"out": args.out})
    if not study.skip_test:
        raise SystemExit(f"{args.config or args.preset} does not set skip_test = true: a grid that evaluated the test split "
                         "cannot choose without looking at it. Run the grid with skip_test = true.")
    reused = sorted(set(args.seeds) & set(study.seeds))
    if reused:
        raise SystemExit(f"--seeds {reused} were used by the grid; the re-run needs fresh seeds.")
    done = load_done(os.path.join(study.out, "runs.jsonl"))
    records = [done[key] for _, key in plan(study, done) if key in done]
    if not records:
        raise SystemExit(f"no finished runs of this grid in {study.out}; run it first: python -m benchmarks.study --config/--preset ...")
    if any(not math.isnan(r["test_acc"]) for r in records):
        raise SystemExit("some runs of the grid hold a test accuracy: they were not run with skip_test; refusing to rank them.")
    ranked = rank(records)
    finalists = [e for e in ranked if e["kind"] != "none"][: args.top]
    other = list(load_done(args.noise_from).values()) if args.noise_from else []
    sd, sd_source = noise_sd(records, other)
    rerun_out = args.rerun_out or study.out.rstrip("/") + "-rerun"
    rerun_path = os.path.join(study.out, "rerun.toml")
    with open(rerun_path, "w") as f:
        f.write(rerun_config(study, finalists, seeds=args.seeds, out=rerun_out))
    md = search_markdown(study, ranked, finalists, sd=sd, sd_source=sd_source, seeds=args.seeds, rerun_path=rerun_path)
    with open(os.path.join(study.out, "search.md"), "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {study.out}/search.md and {rerun_path} ({len(records)} runs ranked, {len(finalists)} re-run)")
    return {"ranking": ranked, "finalists": finalists, "noise_sd": sd, "rerun": rerun_path}


if __name__ == "__main__":
    main()
