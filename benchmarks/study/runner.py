"""The study's runs: every (dataset, model, arm, seed), each identified by a key, skipped when
``runs.jsonl`` already holds it, resumed from its checkpoint when interrupted, and ``runs.csv``."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from ..data import Data, load_data
from .config import Study, arm_settings
from .explain import KEYS as EXPLAIN_KEYS
from .explain import ExplainSet, explanation_set
from .loop import train_run

CSV_COLUMNS = ["dataset", "model", "arm", "kind", "seed", "epochs", "test_acc", "val_acc", "wall_s", "images_seen",
               "train_size", "maps_final", "masked_area_mean", "refresh_s", "schedule", "method", "mode", "threshold",
               "weight", "fraction", "select", "budget", "proxies", "lr", "batch_size", "size", "pretrained", "key",
               *(f"explain_{k}" for k in EXPLAIN_KEYS)]


def run_key(dataset: str, model: str, arm: Dict[str, Any], seed: int, study: Study) -> str:
    """A run's identity: everything that shapes its training (reporting options excluded)."""
    arm = {k: v for k, v in arm.items() if k != "compare"}
    ident = json.dumps({"dataset": dataset, "model": model, "arm": arm, "seed": seed, **study.training_settings()}, sort_keys=True, default=str)
    return hashlib.sha1(ident.encode()).hexdigest()[:16]


def plan(study: Study) -> List[Tuple[Tuple[str, str, Dict[str, Any], int], str]]:
    """Every run of the study, ``((dataset, model, arm settings, seed), key)``, in running order."""
    runs = [(d, m, arm_settings(a, study), s) for d in study.datasets for m in study.models for s in study.seeds for a in study.arms]
    return [(run, run_key(*run, study)) for run in runs]


def csv_row(record: Dict[str, Any], study: Study) -> Dict[str, Any]:
    """A run's row of ``runs.csv``."""
    row = {k: record.get(k, "") for k in CSV_COLUMNS}
    row.update({k: v for k, v in record["settings"].items() if k in CSV_COLUMNS})
    row.update({"lr": study.lr, "batch_size": study.batch_size, "size": study.size, "pretrained": study.pretrained})
    for k in ("test_acc", "val_acc", "masked_area_mean"):
        row[k] = f"{record[k]:.6f}"
    for k in ("wall_s", "refresh_s"):
        row[k] = f"{record[k]:.2f}"
    for k, v in (record.get("explain") or {}).items():  # after training
        row[f"explain_{k}"] = f"{v:.6f}"
    return row


def load_done(path: str) -> Dict[str, Dict[str, Any]]:
    """The records of ``runs.jsonl`` at ``path`` by key (empty when it does not exist)."""
    done: Dict[str, Dict[str, Any]] = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    done[rec["key"]] = rec
    return done


def complete(record: Dict[str, Any], study: Study) -> bool:
    """Whether a finished run holds what the study measures: with explanations on, a run recorded
    without them (or with other explanation settings) is run again. Measuring does not change
    training, so the new record's accuracies equal the old one's."""
    return not study.explain or record.get("explain_settings") == study.explain_settings()


def _rewrite(jsonl: str, done: Dict[str, Dict[str, Any]]) -> None:
    """``runs.jsonl`` with one line per key (a run measured again replaces its earlier line)."""
    with open(jsonl + ".tmp", "w") as f:
        for rec in done.values():
            f.write(json.dumps(rec) + "\n")
    os.replace(jsonl + ".tmp", jsonl)


def run_study(study: Study, log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Run every (dataset, model, arm, seed) not finished yet; return the study's records."""
    if study.threads:
        torch.set_num_threads(study.threads)
    os.makedirs(study.out, exist_ok=True)
    for sub in ("checkpoints", "grids"):
        os.makedirs(os.path.join(study.out, sub), exist_ok=True)
    jsonl = os.path.join(study.out, "runs.jsonl")
    done = load_done(jsonl)
    runs = plan(study)
    todo = sum(key not in done or not complete(done[key], study) for _, key in runs)
    log(f"study: {len(runs)} runs ({len(runs) - todo} already done) -> {study.out}")
    data_cache: Dict[str, Data] = {}
    eset: Optional[ExplainSet] = None
    for n, ((dname, mname, arm, seed), key) in enumerate(runs, 1):
        if key in done and complete(done[key], study):
            continue
        if dname not in data_cache:
            data_cache = {dname: load_data(dname, study.size, study.root, study.test_fraction, study.split_seed, study.cue_strength,
                                            pool_size=study.pool_size)}
            eset = explanation_set(data_cache[dname], study)
            log(data_cache[dname].info + (f"; explanations on {eset.info}" if eset else ""))
        log(f"run {n}/{len(runs)}: {dname} / {mname} / {arm['name']} / seed {seed}")
        ckpt = os.path.join(study.out, "checkpoints", key + ".pt")
        grid_dir = os.path.join(study.out, "grids") if seed == study.seeds[0] else None
        record = train_run(study, data_cache[dname], mname, arm, seed, checkpoint=ckpt, grid_dir=grid_dir, log=log, explain=eset)
        record["key"] = key
        if eset is not None:
            record.update(explain_info=eset.info, explain_settings=study.explain_settings())
        replaces = key in done
        done[key] = record
        if replaces:
            _rewrite(jsonl, done)
        else:
            with open(jsonl, "a") as f:
                f.write(json.dumps(record) + "\n")
        os.remove(ckpt)
    records = [done[key] for _, key in runs]
    write_csv(study, records)
    return records


def write_csv(study: Study, records: List[Dict[str, Any]]) -> None:
    """Write ``runs.csv`` in ``study.out``: one row per record."""
    with open(os.path.join(study.out, "runs.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in records:
            writer.writerow(csv_row(r, study))
