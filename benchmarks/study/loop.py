"""One run of the study: (dataset, model, arm, seed), trained epoch by epoch.

[`Run`][benchmarks.study.loop.Run] holds a run's state and cuts the loop into its steps:
``resume`` (from a checkpoint), ``epoch`` (train once over ``n_train`` sampled images),
``evaluate`` (test and validation accuracy), ``round`` (the arm's refresh point),
``checkpoint`` (save) and ``record`` (the run's result). [`train_run`][benchmarks.study.loop.train_run]
strings them together. What the arm does is the arm's business: the loop only calls its methods.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Sampler, Subset

import proxyaug as pa

from ..data import Data, split_fingerprint, split_pool
from .arms import Context, arm_kind
from .budget import cosine_warmup, eval_after, nested_subset, unit_steps
from .compare import CompareSet, measure_compare, save_compare
from .config import Study
from .explain import ExplainSet, measure, save_maps
from .grids import grid_file, save_grid
from .models import build_model
from .text import slug


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Any, preprocess: Callable, device: torch.device, batch_size: int = 512, workers: int = 0,
             per_class: bool = False) -> Any:
    """Top-1 accuracy of ``model`` (put in eval mode) on ``dataset`` of ``(x, y)``; with
    ``per_class``, ``(accuracy, [accuracy of each class present])`` (classes by label, NaN for an absent one)."""
    model.eval()
    hits, counts = torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    for x, y in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        pred = model(preprocess(x.to(device))).argmax(1).cpu()
        n = max(int(y.max()) + 1, counts.numel())
        counts = torch.nn.functional.pad(counts, (0, n - counts.numel())) + torch.bincount(y, minlength=n)
        hits = torch.nn.functional.pad(hits, (0, n - hits.numel())) + torch.bincount(y[pred == y], minlength=n)
    acc = int(hits.sum()) / int(counts.sum())
    if not per_class:
        return acc
    return acc, [h / c if c else float("nan") for h, c in zip(hits.tolist(), counts.tolist())]


def rng_states() -> Dict[str, Any]:
    """The random states a resumed run restores: the CPU generator's (``"rng"``) and, where CUDA is
    available, every CUDA device's (``"cuda_rng"``: dropout and any draw made on the GPU)."""
    states: Dict[str, Any] = {"rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda_rng"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(state: Dict[str, Any]) -> None:
    """Restore what [`rng_states`][benchmarks.study.loop.rng_states] saved; a checkpoint without
    CUDA states (written on the CPU) or a machine without CUDA restores the CPU generator alone."""
    torch.set_rng_state(state["rng"])
    cuda = state.get("cuda_rng")
    if cuda is not None and torch.cuda.is_available():
        for device, cuda_state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


class LiveDraws(Sampler):
    """``RandomSampler(num_samples=..., generator=...)``'s draws over the items a dataset can serve
    now: a [`ProxyDataset`][proxyaug.ProxyDataset]'s live items (with ``proxies="append"`` its
    length stays ``2 * n`` and an extra slot is live once its sample has a map). The same images, in
    the same order, as a ``RandomSampler`` over 0.1's dataset that grew by its extra items."""

    def __init__(self, items: Any, num_samples: int, generator: torch.Generator) -> None:
        self.items, self.num_samples, self.generator = items, num_samples, generator

    def __iter__(self) -> Iterator[int]:
        live = self.items.live_items()
        positions = RandomSampler(range(live.numel()), num_samples=self.num_samples, generator=self.generator)
        return iter(live[list(positions)].tolist())

    def __len__(self) -> int:
        return self.num_samples


def load_checkpoint(path: str) -> Dict[str, Any]:
    """A run's checkpoint, read onto the CPU whatever the run's device.

    The RNG states must stay CPU byte tensors (``torch.set_rng_state``, ``Generator.set_state``);
    the model, optimizer and bank states reach the run's device as they load (their
    ``load_state_dict`` copies into tensors already there).
    """
    return torch.load(path, map_location="cpu", weights_only=False)


def make_optimizer(model: nn.Module, study: Study) -> torch.optim.Optimizer:
    """The study's optimiser for ``model``: SGD with Nesterov momentum (the default), or AdamW."""
    if study.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=study.lr, weight_decay=study.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=study.lr, momentum=study.momentum, weight_decay=study.weight_decay, nesterov=True)


class Run:
    """A run's state: model, optimizer, LR schedule, arm, dataset, loader, RNGs and history."""

    def __init__(self, study: Study, data: Data, model_name: str, spec: Dict[str, Any], seed: int) -> None:
        self.study, self.data, self.model_name, self.spec, self.seed = study, data, model_name, spec, seed
        device = self.device = torch.device(study.device)
        self.schedule = pa.ProxySchedule.parse(spec["schedule"])
        if study.sizes:  # one size of a learning curve: the seed's nested class-balanced subset
            (self.subset_size,) = study.sizes
            fixed = nested_subset(data.pool_labels, self.subset_size, seed, study.val_fraction, study.val_cap)
        else:
            fixed = split_pool(data.pool_labels, study.val_fraction, study.split_seed)
            self.subset_size = len(data.pool_labels)
        mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
        self.preprocess = lambda x: (x - mean) / std

        torch.manual_seed(seed)  # seed s: the same initial weights in every arm
        self.model = build_model(model_name, data.num_classes, data.channels, study.size, study.pretrained, study.small_stem).to(device)
        context = Context(data.pool, data.pool_labels, fixed, study.val_fraction, device, self.preprocess, seed)
        self.arm = arm_kind(spec["kind"])(spec, context)
        self.n_train = context.n_train
        units = self.schedule.epochs
        if study.steps:  # a step budget: each unit of the schedule is steps / units optimiser steps
            (self.budget,) = study.steps
            self.draws = unit_steps(self.budget, units) * study.batch_size
            self.evals = set(eval_after(self.budget, units, study.eval_every)) if study.eval_every else set(range(units))
        else:  # epochs: each unit is one pass over the training images
            self.draws, self.evals = self.n_train, set(range(units))
            self.budget = units * math.ceil(self.n_train / study.batch_size)
        self.sampler_gen = torch.Generator().manual_seed(seed)
        self.use_split(*fixed)
        self.opt = make_optimizer(self.model, study)
        if study.lr_schedule == "cosine":
            self.lr_sched: Any = torch.optim.lr_scheduler.LambdaLR(self.opt, cosine_warmup(self.budget, study.warmup))
        else:
            self.lr_sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=study.lr, total_steps=self.budget)
        self.history: Dict[str, Any] = {"test_acc": [], "val_acc": [], "loss": [], "rounds": [], "splits": [split_fingerprint(self.train_idx)],
                                        "images_seen": 0, "wall_s": 0.0, "eval_steps": [], "steps": 0}
        self.next_epoch, self.rounds_done = 0, 0

    def use_split(self, train_idx: torch.Tensor, val_idx: torch.Tensor) -> None:
        """Train on ``train_idx`` of the pool (a new dataset from the arm, and its loader)."""
        self.train_idx, self.val_idx = train_idx, val_idx
        self.ds = self.arm.make_dataset(train_idx)
        self.arm.attach(self.ds)
        items = self.arm.items()
        if isinstance(items, pa.ProxyDataset):  # equal images per epoch, every arm
            sampler: Sampler = LiveDraws(items, self.draws, self.sampler_gen)
        else:
            sampler = RandomSampler(items, num_samples=self.draws, generator=self.sampler_gen)
        self.loader = DataLoader(items, batch_size=self.study.batch_size, sampler=sampler, num_workers=self.study.workers)

    def resume(self, path: str) -> None:
        """Continue from the checkpoint at ``path``, after the epoch it was saved at."""
        state = load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.lr_sched.load_state_dict(state["lr_sched"])
        if not torch.equal(state["train_idx"], self.train_idx):  # the arm re-drew the split
            self.use_split(state["train_idx"], state["val_idx"])
        self.val_idx, self.rounds_done = state["val_idx"], state["round"]
        self.ds.load_state_dict(state["ds"])
        self.arm.load_state_dict(state["arm"])
        restore_rng(state)
        self.sampler_gen.set_state(state["sampler_gen"])
        self.history, self.next_epoch = state["history"], state["epoch"] + 1

    def epoch(self) -> None:
        """One epoch of training: the arm changes each batch and sees its logits."""
        self.model.train()
        total_loss, seen = torch.zeros((), device=self.device), 0
        for x, y, idx in self.loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with self.arm.step(self.model):  # e.g. maps captured from this step's backward
                out = self.arm.apply(x, y, idx, self.model)
                x, target = out if isinstance(out, tuple) else (out, y)  # a mixing arm gives soft labels too
                logits = self.model(self.preprocess(x))
                self.arm.observe(idx, logits, y)
                loss = nn.functional.cross_entropy(logits, target)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
            self.opt.step()
            self.lr_sched.step()
            total_loss += loss.detach() * len(y)  # summed on the device: no host sync per step
            seen += len(y)
            self.history["steps"] = self.history.get("steps", 0) + 1
        self.history["images_seen"] += seen
        self.history["loss"].append(float(total_loss) / seen)

    def evaluate(self) -> Tuple[float, float]:
        """Test and validation accuracy, appended to the curves (test NaN, never touched, with ``skip_test``)."""
        workers = self.study.workers
        skip = self.study.skip_test  # a regime search chooses on validation only: the test split stays unread
        test_acc, per_class = float("nan"), []
        if not skip:
            test_acc, per_class = accuracy(self.model, self.data.test, self.preprocess, self.device, workers=workers, per_class=True)
        val_acc = accuracy(self.model, Subset(self.data.pool, self.val_idx.tolist()), self.preprocess, self.device, workers=workers)
        self.history["test_acc"].append(test_acc)
        self.history["val_acc"].append(val_acc)
        self.history.setdefault("eval_steps", []).append(self.history.get("steps", 0))
        self.history["test_per_class"] = per_class
        return test_acc, val_acc

    def round(self, epoch: int, grid_dir: Optional[str] = None) -> str:
        """The refresh point after ``epoch``: the arm's round, its grids, a new split if it drew one."""
        self.rounds_done += 1
        done = self.arm.round(self.model, epoch=epoch, number=self.rounds_done)
        if done.record is not None:
            rec = done.record
            self.history["rounds"].append({k: v for k, v in rec.items() if k != "new_rows"})
            if grid_dir and self.study.grids and self.arm.grid_titles and rec.get("new_rows"):
                name = grid_file(self.data.name, self.model_name, self.spec["name"], self.seed, self.rounds_done)
                title = (f"{self.data.name} / {self.model_name} / arm {self.spec['name']}: seed {self.seed}, "
                         f"refresh {self.rounds_done} (after epoch {epoch + 1})")
                save_grid(os.path.join(grid_dir, name), self.arm, torch.as_tensor(rec["new_rows"][: self.study.grids]),
                          model=self.model, preprocess=self.preprocess, title=title, class_names=self.data.class_names,
                          chosen=len(rec["new_rows"]))
        if done.split is not None:
            self.use_split(*done.split)
        self.history["splits"].append(split_fingerprint(self.train_idx))
        return done.note

    def explain(self, epoch: int, eset: ExplainSet, grid_path: Optional[str] = None) -> None:
        """Measure what the model looks at after ``epoch`` (``benchmarks.study.explain``); not timed as training."""
        t0 = time.perf_counter()
        result = measure(self.model, eset, self.preprocess, self.spec, self.study)
        maps = result.pop("maps")
        self.history.setdefault("explain", []).append({"epoch": epoch, **result})
        if grid_path and self.study.grids:
            save_maps(grid_path, eset, maps, self.study.grids)
        self.history["explain_s"] = self.history.get("explain_s", 0.0) + time.perf_counter() - t0

    def compare(self, cset: CompareSet, path: str) -> None:
        """RQ2's measurement after training (``benchmarks.study.compare``), saved to ``path``; not timed as training."""
        t0 = time.perf_counter()
        artifact = measure_compare(self.model, cset, self.preprocess, self.study)
        artifact.update(dataset=self.data.name, model=self.model_name, arm=self.spec["name"], seed=self.seed)
        save_compare(path, artifact)
        self.history["compare_s"] = time.perf_counter() - t0

    def checkpoint(self, epoch: int, path: str) -> None:
        """Save everything ``resume`` needs after ``epoch`` (atomically: write, then rename)."""
        torch.save({
            "epoch": epoch, "model": self.model.state_dict(), "opt": self.opt.state_dict(), "lr_sched": self.lr_sched.state_dict(),
            "ds": self.ds.state_dict(), "arm": self.arm.state_dict(), **rng_states(),
            "sampler_gen": self.sampler_gen.get_state(), "history": self.history, "train_idx": self.train_idx, "val_idx": self.val_idx,
            "round": self.rounds_done,
        }, path + ".tmp")
        os.replace(path + ".tmp", path)

    def record(self) -> Dict[str, Any]:
        """The finished run's record (a line of ``runs.jsonl``)."""
        h, spec = self.history, self.spec
        rounds = h["rounds"]
        return {
            "dataset": self.data.name, "model": self.model_name, "arm": spec["name"], "kind": spec["kind"], "seed": self.seed,
            "epochs": self.schedule.epochs, "test_acc": h["test_acc"][-1], "val_acc": h["val_acc"][-1], "wall_s": h["wall_s"],
            "images_seen": h["images_seen"], "train_size": self.n_train, "test_size": 0 if self.study.skip_test else len(self.data.test),
            "maps_final": rounds[-1]["maps"] if rounds else 0,
            "masked_area_mean": statistics.fmean(r["masked_area"] for r in rounds) if rounds else 0.0,
            "refresh_s": sum(r["seconds"] for r in rounds),
            "settings": {k: v for k, v in spec.items() if k not in ("name", "kind", "compare")},
            "test_acc_curve": h["test_acc"], "val_acc_curve": h["val_acc"], "loss_curve": h["loss"],
            "rounds": rounds, "splits": h["splits"],
            **({"subset_size": self.subset_size, "steps": self.budget, "lr": self.study.lr, "weight_decay": self.study.weight_decay,
                "val_size": len(self.val_idx), "eval_steps": h["eval_steps"], "test_per_class": h["test_per_class"]} if self.study.sizes else {}),
            **({"explain": {k: v for k, v in h["explain"][-1].items() if k != "epoch"}, "explain_curve": h["explain"],
                "explain_s": h["explain_s"]} if h.get("explain") else {}),
            **({"compare_s": h["compare_s"]} if "compare_s" in h else {}),
        }


def train_run(study: Study, data: Data, model_name: str, arm: Dict[str, Any], seed: int, *,
              checkpoint: Optional[str] = None, grid_dir: Optional[str] = None, log: Callable[[str], None] = print,
              explain: Optional[ExplainSet] = None, compare: Optional[CompareSet] = None, compare_to: Optional[str] = None) -> Dict[str, Any]:
    """Train one (dataset, model, arm, seed) run, resuming from ``checkpoint`` if it exists; return its record.

    With ``explain``, explanations are measured on it after each refresh point of the study's
    schedule (for every arm, at the same epochs) and after the last epoch. With ``compare``, RQ2's
    measurement runs once after the last epoch and is saved to ``compare_to``."""
    run = Run(study, data, model_name, arm, seed)
    if checkpoint and os.path.exists(checkpoint):
        run.resume(checkpoint)
        log(f"resumed from {checkpoint} after epoch {run.next_epoch}")
    tag = f"[{data.name} {model_name} {arm['name']} seed {seed}]"
    epochs = run.schedule.epochs
    study_points = pa.ProxySchedule.parse(study.schedule)  # the same measuring epochs for every arm
    for epoch in range(run.next_epoch, epochs):
        t0 = time.perf_counter()
        run.epoch()
        evaluated = epoch in run.evals
        test_acc, val_acc = run.evaluate() if evaluated else (float("nan"), float("nan"))
        note = run.round(epoch, grid_dir) if run.schedule.should_refresh(epoch) else ""
        run.history["wall_s"] += time.perf_counter() - t0
        if explain is not None and (study_points.should_refresh(epoch) or epoch == epochs - 1):
            last = epoch == epochs - 1 and grid_dir is not None
            run.explain(epoch, explain, os.path.join(grid_dir, "explain", slug(f"{data.name}-{model_name}-{arm['name']}") + ".pt") if last else None)
            e = run.history["explain"][-1]
            note += f" | explain: acc {100 * e['acc']:.1f} %" + (f", cue energy {e['eval_cue_energy']:.3f}" if "eval_cue_energy" in e else "")
        if checkpoint:
            run.checkpoint(epoch, checkpoint)
        test = " (test not read: skip_test)" if math.isnan(test_acc) else f" test {100 * test_acc:6.2f} %"
        accs = f" val {100 * val_acc:6.2f} %{test}" if evaluated else ""
        unit = f"step {run.history['steps']:5d}/{run.budget}" if study.steps else f"epoch {epoch + 1:2d}/{epochs}"
        log(f"{tag} {unit} loss {run.history['loss'][-1]:.4f}{accs}{note}")
    if compare is not None:
        if compare_to is None:
            raise ValueError("compare_to=None: RQ2's measurement needs a path to save to (runner: <out>/compare/<key>.pt).")
        run.compare(compare, compare_to)
        log(f"{tag} compared: maps of {len(compare.index)} test images, robustness on {len(compare.y)} -> {compare_to} "
            f"({run.history['compare_s']:.0f} s)")
    return run.record()
