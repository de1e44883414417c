"""The command line: ``python -m benchmarks.speed``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

import torch

from ..env import environment, version
from .cases import CASES
from .peers import PEERS
from .presets import PRESETS
from .report import render, verdicts

DESCRIPTION = "Speed of proxyaug against plain inference, pytorch-grad-cam, a training step and the thesis."


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run the cases of a preset (or, with ``--render``, print the table of a result file); return the results."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=DESCRIPTION)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--cases", help=f"comma-separated subset of {','.join(CASES)} (default: the preset's `cases`)")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--render", metavar="JSON", help="only print the markdown table of an earlier result file")
    p.add_argument("--merge", action="store_true",
                   help="add the cases run to the preset's existing result file (each keeps its own command, machine and commit) "
                        "instead of writing a new one")
    args = p.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            text = render(json.load(f))
        sys.stdout.write(text)
        return {}
    cfg = dict(PRESETS[args.preset])
    device = torch.device(cfg["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("the gpu preset needs CUDA; none is available here")
    wanted = [c.strip() for c in (args.cases or ",".join(cfg.get("cases", CASES))).split(",") if c.strip()]
    unknown = set(wanted) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown case(s) {sorted(unknown)}; expected some of {list(CASES)}")
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, f"speed-{args.preset}.json")
    command = " ".join(["python -m benchmarks.speed", *(sys.argv[1:] if argv is None else argv)])
    results: Dict[str, Any] = {"preset": args.preset, "settings": cfg, "environment": environment(device),
                               "command": command, "json": json_path, "cases": {}}
    results["environment"]["versions"].update({dist: version(dist) for _, _, dist in PEERS})  # the peers beside grad-cam
    if args.merge and os.path.exists(json_path):
        results = _merge_into(json_path, results, wanted)
    print(f"proxyaug speed benchmark, preset {args.preset!r} on {results['environment']['device']}")
    load = results["environment"].setdefault("load", {"cases": {}})
    for name in wanted:
        print(f"[{name}]")
        start, before = time.perf_counter(), _load()
        results["cases"][name] = CASES[name](cfg, device, print)
        load["cases"][name] = {"before": before, "after": _load()}
        if args.merge:
            results["case_runs"][name]["environment"]["load"] = {"cases": {name: load["cases"][name]}}
        print(f"  ({time.perf_counter() - start:.0f} s; load average {before:.1f} -> {_load():.1f})")
    results["verdicts"] = verdicts(results)
    missed = sum(not v["met"] for v in results["verdicts"])
    print(f"targets: {len(results['verdicts']) - missed} met, {missed} missed (see the table)")
    with open(json_path, "w") as f:
        json.dump(results, f, indent=2)
    md_path = json_path[:-5] + ".md"
    with open(md_path, "w") as f:
        f.write(render(results))
    print(f"wrote {json_path} and {md_path}")
    return results


def _load() -> float:
    """The machine's 1-minute load average (0.0 where the system has none): other work shows in it."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def _merge_into(json_path: str, fresh: Dict[str, Any], wanted: List[str]) -> Dict[str, Any]:
    """The earlier results, with a record of this run (command, machine, commit) for each case it re-runs."""
    with open(json_path) as f:
        old = json.load(f)
    if old.get("preset") != fresh["preset"]:
        raise SystemExit(f"--merge: {json_path} holds preset {old.get('preset')!r}, not {fresh['preset']!r}")
    old["settings"] = {**fresh["settings"], **old["settings"]}  # new keys added; the earlier cases' settings kept (a merged case's own under case_runs)
    runs = old.setdefault("case_runs", {})
    for name in wanted:
        runs[name] = {"command": fresh["command"], "environment": dict(fresh["environment"]), "settings": fresh["settings"]}
    return old
