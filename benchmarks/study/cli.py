"""The command line: ``python -m benchmarks.study`` (alias ``python -m benchmarks.train``)."""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..data import load_data
from .arms import arm_kind
from .compare import compare_seconds
from .config import CONFIG_DIR, Study, load_study
from .loop import make_optimizer
from .models import build_model
from .report import report
from .runner import complete, load_done, plan, run_study, write_csv
from .tuning import select_arms
from .text import duration, pp

DESCRIPTION = "The accuracy study: does Proxy Attention help? Fair arms, controls and the thesis' protocol."


def parse_args(argv: Optional[List[str]], prog: Optional[str] = None) -> Tuple[Optional[str], Dict[str, Any], argparse.Namespace]:
    """``(config or preset, study overrides, all arguments)`` of a command line."""
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="a .toml / .json study file")
    presets = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".toml"))
    p.add_argument("--preset", help=f"a study in benchmarks/configs/: {', '.join(presets)}")
    p.add_argument("--datasets", nargs="+", help="digits, shortcut-digits, fashion-mnist, mnist, cifar10, cifar100, caltech101, flowers102, oxford-pet, imagefolder:PATH")
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
    p.add_argument("--pool-size", type=int, help="a stratified seeded subset of this many pool images (default: all)")
    p.add_argument("--skip-test", action="store_true", default=None, help="never evaluate on the test split (a regime search)")
    p.add_argument("--sizes", type=int, nargs="+", help="training-set sizes (nested class-balanced subsets of the pool, per seed)")
    p.add_argument("--steps", type=int, nargs="+", help="optimisation budgets in steps, the same at every size")
    p.add_argument("--eval-every", type=int, help="with --steps: evaluate every this many steps (and at the end)")
    p.add_argument("--fresh", action="store_true", help="delete earlier results in --out first")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from runs.jsonl")
    p.add_argument("--estimate", action="store_true", help="print how long the runs still to do take here, and stop")
    args = p.parse_args(argv)
    if args.config and args.preset:
        p.error("give --config or --preset, not both")
    overrides = {k: getattr(args, k) for k in ("datasets", "models", "seeds", "schedule", "lr", "batch_size", "size", "pretrained",
                                              "root", "device", "workers", "threads", "grids", "out", "pool_size", "skip_test", "sizes", "steps", "eval_every")}
    return args.config or args.preset, overrides, args


def calibrate(model_name: str, study: Study, channels: int, num_classes: int, steps: int = 5) -> Dict[str, float]:
    """Seconds per image of a training step and of an evaluation forward pass of ``model_name``,
    measured here on random images at the study's size, batch size, device and threads."""
    if study.threads:
        torch.set_num_threads(study.threads)
    device = torch.device(study.device)
    state = torch.get_rng_state()  # leave the runs' random numbers as they would be without the estimate
    try:
        model = build_model(model_name, num_classes, channels, study.size, study.pretrained, study.small_stem).to(device)
        x = torch.rand(study.batch_size, channels, study.size, study.size, device=device)
        y = torch.randint(0, num_classes, (study.batch_size,), device=device)
        opt = make_optimizer(model, study)
        costs = {}
        for phase in ("train", "eval"):
            model.train(phase == "train")
            times: List[float] = []
            warm = time.perf_counter() + 1.0  # warm up for at least three calls and a second (thread pools, kernels)
            while len(times) < steps + 3 or (time.perf_counter() < warm and len(times) < 50):
                sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
                sync()
                t0 = time.perf_counter()
                with torch.set_grad_enabled(phase == "train"):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                    if phase == "train":
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                sync()
                times.append(time.perf_counter() - t0)
            costs[phase] = statistics.median(times[-steps:]) / study.batch_size
        return costs
    finally:
        torch.set_rng_state(state)


def run_seconds(costs: Dict[str, float], arm: Dict[str, Any], study: Study, pool: int, test: int, classes: int = 10) -> float:
    """Estimated seconds of one run: training, evaluation each epoch and, for refreshing arms, the
    scans of the training set and the maps (each costs about one training step)."""
    import proxyaug as pa

    schedule = pa.ProxySchedule.parse(arm.get("schedule", study.schedule))
    if study.sizes:  # one size of a learning curve: its subset, a step budget, evaluations every eval_every steps
        pool = study.sizes[0]
    val = math.ceil(study.val_fraction * pool)
    if study.sizes and study.val_cap:
        val = min(val, study.val_cap * classes)  # val_cap counts validation images per class
    train = pool - val
    evals = schedule.epochs
    images = schedule.epochs * train
    if study.steps:
        images = study.steps[0] * study.batch_size
        evals = study.steps[0] // study.eval_every if study.eval_every else schedule.epochs
    seconds = images * costs["train"] + evals * (val + (0 if study.skip_test else test)) * costs["eval"]
    if study.compare and not study.skip_test:
        seconds += compare_seconds(costs, test)
    if arm_kind(arm["kind"]).refreshes:
        budget = arm.get("budget")
        chosen = budget if isinstance(budget, int) else train * (budget if isinstance(budget, float) else arm.get("fraction", 0.2) * 0.1)
        seconds += len(schedule.refresh_epochs) * (train * costs["eval"] + min(chosen, train) * costs["train"])
    return seconds


def estimate(study: Study, log: Any = print, session_minutes: float = 90.0, force: bool = False) -> Dict[str, Any]:
    """How long the runs still to do take on this machine, printed before a study starts: per
    (dataset, model), from the mean ``wall_s`` of its finished runs of the same kind when there are
    any, else from a calibration of a few training steps here. A short study (under 200,000
    training images to go) is not calibrated unless ``force``. Returns the figures."""
    import proxyaug as pa

    done = load_done(os.path.join(study.out, "runs.jsonl"))
    todo = [p for p, key in plan(study, done) if key not in done or not complete(done[key], study)]
    groups: Dict[Tuple[str, str], List[Tuple[Dict[str, Any], Study]]] = {}
    for p in todo:
        groups.setdefault(p.run[:2], []).append((p.run[2], p.study))
    datasets = {d: load_data(d, study.size, study.root, study.test_fraction, study.split_seed, study.cue_strength, pool_size=study.pool_size)
                for d in {d for d, _ in groups}}
    images = sum(p.study.steps[0] * study.batch_size if p.study.steps else
                 pa.ProxySchedule.parse(p.run[2].get("schedule", study.schedule)).epochs * len(datasets[p.run[0]].pool_labels) * (1 - study.val_fraction)
                 for p in todo)
    if not force and images < 200_000:
        log(f"estimate: {len(todo)} runs to do, {images:,.0f} training images: short, not calibrated (--estimate does)")
        return {"runs": len(todo), "seconds": None, "sessions": None}
    total, lines = 0.0, []
    for (dname, mname), arms in groups.items():
        data = datasets[dname]
        costs = calibrate(mname, study, data.channels, data.num_classes)
        measured = {}
        for rec in done.values():
            if (rec["dataset"], rec["model"]) == (dname, mname):
                measured.setdefault(rec["kind"], []).append(rec["wall_s"] + rec.get("explain_s", 0.0) + rec.get("compare_s", 0.0))
        seconds = [sum(measured[a["kind"]]) / len(measured[a["kind"]]) if a["kind"] in measured and not one.sizes
                   else run_seconds(costs, a, one, len(data.pool_labels), len(data.test) if not one.skip_test else 0, data.num_classes)
                   for a, one in arms]
        total += sum(seconds)
        source = "finished runs and " if measured else ""
        lines.append(f"  {dname} / {mname}: {len(arms)} runs, {duration(sum(seconds))} ({duration(sum(seconds) / len(arms))} per run; "
                     f"{source}a calibration here: train {1e3 * costs['train']:.2f} ms, eval {1e3 * costs['eval']:.2f} ms per image)")
    sessions = math.ceil(total / (60 * session_minutes)) if total else 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    busy = f", load average {load:.1f} on {os.cpu_count()} cores: slower than when quiet" if load > (os.cpu_count() or 1) else ""
    log(f"estimate: {len(todo)} runs to do, about {duration(total)} on this machine ({torch.get_num_threads()} threads{busy})"
        + (f"; {sessions} session(s) of {session_minutes:.0f} min: run the same command again to resume" if todo else ""))
    for line in lines:
        log(line)
    return {"runs": len(todo), "seconds": total, "sessions": sessions}


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
    if study.threads:  # every path: the runs, the estimate's calibration, and the report header's thread count
        torch.set_num_threads(study.threads)
    if args.arms:
        try:
            study = select_arms(study, args.arms)
        except ValueError as e:
            raise SystemExit(str(e)) from None
    if args.fresh and os.path.isdir(study.out):
        import shutil

        shutil.rmtree(study.out)
    command = " ".join([f"python -m {module}", *(sys.argv[1:] if argv is None else argv)])
    start = time.perf_counter()
    if args.estimate:
        return estimate(study, force=True)
    if args.report_only:
        done = load_done(os.path.join(study.out, "runs.jsonl"))
        entries = [(p, key) for p, key in plan(study, done) if key in done]
        write_csv(study, [done[key] for _, key in entries])  # runs merged into runs.jsonl by hand (another --out) join the table too
        records = [done[key] for p, key in entries if p.phase == "main"]
    else:
        estimate(study)
        records = run_study(study)
    if study.sizes:  # a learning-curve study: its own report
        from .curves_report import curves_report

        summary = curves_report(study, records, command)
        print(f"wrote {study.out}/report.md, summary.json, plots ({time.perf_counter() - start:.0f} s)")
        return summary
    if study.skip_test:  # no test accuracy to report: the regime search ranks on validation
        from .search import print_ranking

        return print_ranking(study, records)
    total = sum(r["wall_s"] for r in records)
    summary = report(study, records, command, total)
    _print_summary(summary)
    print(f"wrote {study.out}/report.md, runs.csv, summary.json, plots ({time.perf_counter() - start:.0f} s)")
    return summary
