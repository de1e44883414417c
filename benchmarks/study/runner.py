"""The study's runs: every (dataset, model, arm, seed), and with ``sizes`` / ``steps`` every size
and budget (after the baseline's tuning: ``benchmarks.study.tuning``), each identified by a key,
skipped when ``runs.jsonl`` already holds it, resumed from its checkpoint when interrupted, and
``runs.csv``. Several processes can run one study side by side (the same command, the same
``--out``): each claims a run before training it (a lock on ``checkpoints/<key>.claim``, released
when the process ends, however it ends) and skips runs another process holds; records are
appended to ``runs.jsonl`` under a lock."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch

from ..data import Data, load_data
from .compare import CompareSet, compare_path, comparison_set
from .config import Study, arm_settings
from .explain import KEYS as EXPLAIN_KEYS
from .explain import ExplainSet, explanation_set
from .loop import train_run
from .text import progress
from .tuning import Planned, axis_runs, choose, tuning_runs

CSV_COLUMNS = ["dataset", "model", "arm", "kind", "seed", "epochs", "test_acc", "val_acc", "wall_s", "images_seen",
               "train_size", "maps_final", "masked_area_mean", "refresh_s", "schedule", "method", "mode", "threshold",
               "weight", "fraction", "select", "budget", "proxies", "lr", "batch_size", "size", "pretrained", "key",
               "phase", "subset_size", "steps", "weight_decay",
               *(f"explain_{k}" for k in EXPLAIN_KEYS)]


def run_key(dataset: str, model: str, arm: Dict[str, Any], seed: int, study: Study) -> str:
    """A run's identity: everything that shapes its training (reporting options excluded)."""
    arm = {k: v for k, v in arm.items() if k != "compare"}
    ident = json.dumps({"dataset": dataset, "model": model, "arm": arm, "seed": seed, **study.training_settings()}, sort_keys=True, default=str)
    return hashlib.sha1(ident.encode()).hexdigest()[:16]


def plan(study: Study, done: Optional[Dict[str, Dict[str, Any]]] = None) -> List[Tuple[Planned, str]]:
    """Every run of the study with its key, in running order. With ``sizes`` and ``steps``: the
    tuning runs, then (once ``done``, by default ``runs.jsonl``, holds every tuning run) the runs
    of every size and budget with the tuned settings; until then the plan has the tuning runs alone."""
    if not study.sizes:
        runs = [Planned((d, m, arm_settings(a, study), s), study, "main")
                for d in study.datasets for m in study.models for s in study.seeds for a in study.arms]
    else:
        if done is None:
            done = load_done(os.path.join(study.out, "runs.jsonl"))
        runs = tuning_runs(study)
        chosen = choose(study, list(done.values())) if study.tune else None
        if chosen is not None or not study.tune:
            runs += axis_runs(study, chosen)
    only = {a["name"]: a["models"] for a in study.arms if a.get("models")}  # arms restricted to some models
    runs = [p for p in runs if p.run[1] in only.get(p.run[2]["name"], [p.run[1]])]
    return [(p, run_key(*p.run, p.study)) for p in runs]


@contextlib.contextmanager
def claim(path: str) -> Iterator[bool]:
    """Hold the run whose claim file is ``path`` (``True``), or learn that another process holds it
    (``False``). The lock goes with the process: a killed run's claim is free again."""
    f = open(path, "a")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    finally:
        f.close()


def csv_row(record: Dict[str, Any], study: Study) -> Dict[str, Any]:
    """A run's row of ``runs.csv``."""
    row = {k: record.get(k, "") for k in CSV_COLUMNS}
    row.update({k: v for k, v in record["settings"].items() if k in CSV_COLUMNS})
    row.update({"lr": record.get("lr", study.lr), "batch_size": study.batch_size, "size": study.size, "pretrained": study.pretrained})
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
    """Whether a finished run holds what the study measures: with explanations (or RQ2's
    comparison) on, a run recorded without them, with other settings, or (comparison) without its
    file is run again. Measuring does not change training, so the new record's accuracies equal the old one's."""
    explained = not study.explain or record.get("explain_settings") == study.explain_settings()
    compared = not study.compare or record.get("phase") == "tune" or (record.get("compare_settings") == study.compare_settings()
                                     and os.path.exists(compare_path(study.out, record["key"])))
    return explained and compared


def _save(jsonl: str, record: Dict[str, Any], done: Dict[str, Dict[str, Any]]) -> None:
    """Add ``record`` to ``runs.jsonl`` under a lock (other processes append to it too): appended, or,
    when it replaces a run measured again, the file rewritten with one line per key. ``done``
    becomes the file's records."""
    with open(jsonl + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done.update(load_done(jsonl))
        replaces = record["key"] in done
        done[record["key"]] = record
        if replaces:
            with open(jsonl + ".tmp", "w") as f:
                for rec in done.values():
                    f.write(json.dumps(rec) + "\n")
            os.replace(jsonl + ".tmp", jsonl)
        else:
            with open(jsonl, "a") as f:
                f.write(json.dumps(record) + "\n")


def run_study(study: Study, log: Callable[[str], None] = print, poll: float = 30.0) -> List[Dict[str, Any]]:
    """Run every run of the study not finished yet and not held by another process; return the
    study's finished records. While the tuning's last runs are held by another process, wait for
    them (every ``poll`` seconds): the runs after it need its choice."""
    if study.threads:
        torch.set_num_threads(study.threads)
    os.makedirs(study.out, exist_ok=True)
    for sub in ("checkpoints", "grids"):
        os.makedirs(os.path.join(study.out, sub), exist_ok=True)
    jsonl = os.path.join(study.out, "runs.jsonl")
    done = load_done(jsonl)
    data_cache: Dict[str, Data] = {}
    eset: Optional[ExplainSet] = None
    cset: Optional[CompareSet] = None
    finished = lambda key: key in done and complete(done[key], study)  # noqa: E731
    start, times = time.perf_counter(), []  # this process's runs, for the log's progress note
    while True:  # a study with tuning plans its main runs once every tuning run is done
        done.update(load_done(jsonl))  # other processes' runs too
        entries = plan(study, done)
        todo = [(p, key) for p, key in entries if not finished(key)]
        log(f"study: {len(entries)} runs planned, {len(todo)} to do -> {study.out}")
        ran = False
        for n, (p, key) in enumerate(todo, 1):
            ckpt = os.path.join(study.out, "checkpoints", key + ".pt")
            with claim(ckpt[:-3] + ".claim") as mine:
                if not mine:  # another process runs it
                    continue
                done.update(load_done(jsonl))
                if finished(key):  # another process finished it since the plan was made
                    continue
                dname, mname, arm, seed = p.run
                if dname not in data_cache:
                    data_cache = {dname: load_data(dname, study.size, study.root, study.test_fraction, study.split_seed, study.cue_strength,
                                                    pool_size=study.pool_size)}
                    eset, cset = explanation_set(data_cache[dname], study), comparison_set(data_cache[dname], study)
                    log(data_cache[dname].info + (f"; explanations on {eset.info}" if eset else "") + (f"; RQ2 {cset.info}" if cset else ""))
                where = f" / size {p.study.sizes[0]} / {p.study.steps[0]} steps / lr {p.study.lr} wd {p.study.weight_decay}" if p.study.sizes else ""
                log(f"run {n}/{len(todo)} ({p.phase}): {dname} / {mname} / {arm['name']} / seed {seed}{where} "
                    f"[{progress(time.perf_counter() - start, times, len(todo) - n + 1)}]")
                t0 = time.perf_counter()
                grid_dir = os.path.join(study.out, "grids") if seed == study.seeds[0] else None
                one_eset = eset if p.study.explain else None
                one_cset = cset if p.study.compare and not p.study.skip_test else None  # a tuning run never reads test
                record = train_run(p.study, data_cache[dname], mname, arm, seed, checkpoint=ckpt, grid_dir=grid_dir, log=log, explain=one_eset,
                                   compare=one_cset, compare_to=compare_path(study.out, key))
                record.update(key=key, phase=p.phase)
                if one_eset is not None:
                    record.update(explain_info=one_eset.info, explain_settings=study.explain_settings())
                if one_cset is not None:
                    record.update(compare_info=one_cset.info, compare_settings=study.compare_settings())
                _save(jsonl, record, done)
                os.remove(ckpt)
                ran = True
                times.append(time.perf_counter() - t0)
        waiting = study.tune and not any(p.phase == "main" for p, _ in plan(study, done))
        if waiting and not ran:
            log(f"study: the tuning's last runs are held by another process; waiting for them ({poll:.0f} s)")
            time.sleep(poll)
        elif not ran:
            break
    entries = plan(study, done)
    write_csv(study, [done[key] for _, key in entries if key in done])
    return [done[key] for p, key in entries if key in done and p.phase == "main"]


def write_csv(study: Study, records: List[Dict[str, Any]]) -> None:
    """Write ``runs.csv`` in ``study.out``: one row per record."""
    with open(os.path.join(study.out, "runs.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in records:
            writer.writerow(csv_row(r, study))
