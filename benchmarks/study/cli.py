"""The command line: ``python -m benchmarks.study`` (alias ``python -m benchmarks.train``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from .config import load_study
from .report import report
from .runner import load_done, plan, run_study
from .text import pp

DESCRIPTION = "The accuracy study: does Proxy Attention help? Fair arms, controls and the thesis' protocol."


def parse_args(argv: Optional[List[str]], prog: Optional[str] = None) -> Tuple[Optional[str], Dict[str, Any], argparse.Namespace]:
    """``(config or preset, study overrides, all arguments)`` of a command line."""
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="a .toml / .json study file")
    p.add_argument("--preset", help="a study in benchmarks/configs/: demo, study, thesis-grid, tiny")
    p.add_argument("--datasets", nargs="+", help="digits, shortcut-digits, cifar10, cifar100, caltech101, flowers102, oxford-pet, imagefolder:PATH")
    p.add_argument("--models", nargs="+", help="'cnn' or timm model names")
    p.add_argument("--arms", nargs="+", help="run only these arms of the config (by name)")
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--schedule", help="thesis notation, e.g. 3,p,4,p,4,p,2 (every arm trains its total epochs)")
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--size", type=int, help="image side in pixels")
    p.add_argument("--pretrained", action="store_true", default=None, help="timm pretrained weights (must be available locally)")
    p.add_argument("--root", help="where torchvision datasets are stored")
    p.add_argument("--device")
    p.add_argument("--workers", type=int)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--grids", type=int, help="samples per proxy grid (0: none)")
    p.add_argument("--out")
    p.add_argument("--fresh", action="store_true", help="delete earlier results in --out first")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from runs.jsonl")
    args = p.parse_args(argv)
    if args.config and args.preset:
        p.error("give --config or --preset, not both")
    overrides = {k: getattr(args, k) for k in ("datasets", "models", "seeds", "schedule", "lr", "batch_size", "size", "pretrained",
                                              "root", "device", "workers", "threads", "grids", "out")}
    return args.config or args.preset, overrides, args


def _print_summary(summary: Dict[str, Any]) -> None:
    print()
    for group, g in summary.items():
        print(group)
        for a, e in g["arms"].items():
            t = e["test_acc"]
            print(f"  {a:28s} test {100 * t['mean']:6.2f} ± {100 * t['std']:5.2f} %  val {100 * e['val_acc']['mean']:6.2f} %  ({t['n']} seeds, {e['wall_s']['mean']:.0f} s/run)")
        for c in g["comparisons"]:
            print(f"  {c['arm']} - {c['versus']}: {pp(c)} -> {c['verdict']}")


def main(argv: Optional[List[str]] = None, *, module: str = "benchmarks.study") -> Dict[str, Any]:
    """Run (or, with ``--report-only``, only report) a study; return its summary. ``module`` is the
    name the command line shows (``benchmarks.train`` through the alias)."""
    config, overrides, args = parse_args(argv, prog=f"python -m {module}")
    study = load_study(config, overrides)
    if args.arms:
        names = {a["name"] for a in study.arms}
        missing = set(args.arms) - names
        if missing:
            raise SystemExit(f"--arms {sorted(missing)} not in the config; it has {sorted(names)}")
        study.arms = [a for a in study.arms if a["name"] in args.arms]
    if args.fresh and os.path.isdir(study.out):
        import shutil

        shutil.rmtree(study.out)
    command = " ".join([f"python -m {module}", *(sys.argv[1:] if argv is None else argv)])
    start = time.perf_counter()
    if args.report_only:
        done = load_done(os.path.join(study.out, "runs.jsonl"))
        records = [done[key] for _, key in plan(study) if key in done]
    else:
        records = run_study(study)
    total = sum(r["wall_s"] for r in records)
    summary = report(study, records, command, total)
    _print_summary(summary)
    print(f"wrote {study.out}/report.md, runs.csv, summary.json, plots ({time.perf_counter() - start:.0f} s)")
    return summary
