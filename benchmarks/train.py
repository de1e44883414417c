"""The accuracy study: does Proxy Attention help? Fair arms, controls and the thesis' protocol.

Every run of a study trains one model on one dataset with one *arm* and one seed. All arms of
a study share the dataset's fixed split (pool -> train / validation, test held out), the number
of epochs, the optimizer and LR schedule, and the number of images per epoch; seed ``s`` of every
arm starts from the same weights. Runs are paired by seed, so each arm is compared with the
baseline by the paired difference and its 95 % t-interval.

Arm kinds (``kind`` in a config's ``[[arms]]`` table):

- ``none``: plain training (the baseline).
- ``proxy``: Proxy Attention: on the schedule, ``refresh`` maps the wrongly predicted training
  images (``method``, ``fraction``, ``select``) and ``ProxyTransform`` replaces their pixels
  (``mode``, ``threshold``, ``weight``). ``proxies = "append"`` adds the proxy images as extra
  samples instead (``ProxyDataset(proxies="append")``); the sampler still draws the same number
  of images per epoch. ``observe = true`` records the training batches' mistakes
  (``ProxyDataset.observe``) so that each refresh scans only those.
- ``random-mask``: the control for the map's *location*: the same refresh, the same samples and
  the same mask shape and area (the upsampled map, thresholded), moved to a random place
  (a random circular shift per sample and round).
- ``random-erasing``: Kornia's ``RandomErasing`` on the batch, black, with the area and the
  probability matched to the proxy masks of the same run (each round runs the same refresh to
  measure them: mean masked area, share of training images with a map).
- ``cutout``: albumentations ``CoarseDropout`` (one square hole, black) in ``__getitem__``,
  the CPU path, matched the same way.
- ``keepaugment``: a KeepAugment-style selective cut (Gong et al., CVPR 2021): the matched
  square hole is placed where the model's vanilla-gradient saliency of the image is low (the
  first of ``tries`` random places holding less than an average region's share of the saliency,
  else the least salient one), so the evidence is kept. The saliency is computed with the
  current model in eval mode, one extra forward and backward pass for the images cut.
- ``thesis-protocol``: no proxy, but the train / validation split is re-drawn from the pool at
  every round (every refresh point of the schedule), as the thesis' code did. Its validation
  accuracy is what the thesis reported; its test accuracy is the honest one.

Output (``--out``): ``runs.csv`` (one row per run), ``runs.jsonl`` (the same plus curves and
refreshes), ``summary.json``, ``report.md``, ``accuracy-*.png``, ``bars.png``, ``differences.png`` and proxy grids per
refresh under ``grids/`` (original | map | proxy, the replaced region outlined in cyan with its area).
Finished runs are skipped when the command is run again with the same settings, and an
interrupted run resumes from its last epoch checkpoint (``checkpoints/``).

Run ``python -m benchmarks.train --preset demo`` (``--help`` for options; presets and the
config format are in ``benchmarks/configs/``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import statistics
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Subset

import proxyaug as pa
from proxyaug import functional as PF
from proxyaug.attention import eval_mode

from .data import Data, load_data, split_fingerprint, split_pool
from .env import environment

KINDS = ("none", "proxy", "random-mask", "random-erasing", "cutout", "keepaugment", "thesis-protocol")
REFRESHING = ("proxy", "random-mask", "random-erasing", "cutout", "keepaugment")
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

# Proxy Attention's settings; the thesis' defaults. Every refreshing arm takes them (controls
# match the masks of the refresh they run).
PROXY_DEFAULTS: Dict[str, Any] = {
    "method": "gradcam++", "mode": "blend", "threshold": 0.85, "weight": 0.1, "fraction": 0.2,
    "select": "wrong", "proxies": "replace", "layer": None, "observe": False, "tries": 10,
}
ARM_KEYS = {"name", "kind", "schedule", "compare", *PROXY_DEFAULTS}


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
    out: str = "runs/study"

    def training_settings(self) -> Dict[str, Any]:
        """What every run of the study shares (part of each run's identity)."""
        keys = ("schedule", "lr", "momentum", "weight_decay", "batch_size", "size", "val_fraction", "test_fraction",
                "split_seed", "cue_strength", "pretrained", "small_stem")
        return {k: getattr(self, k) for k in keys}


# -- config -------------------------------------------------------------------------------------
def _read_config(path: str) -> Dict[str, Any]:
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
    out: List[Dict[str, Any]] = []
    for i, arm in enumerate(arms):
        arm = dict(arm)
        unknown = set(arm) - ARM_KEYS
        if unknown:
            raise ValueError(f"arms[{i}] has unknown settings {sorted(unknown)}; expected some of {sorted(ARM_KEYS)}.")
        kind = arm.get("kind")
        if kind not in KINDS:
            raise ValueError(f"arms[{i}].kind={kind!r} is not valid; expected one of {', '.join(KINDS)}.")
        arm.setdefault("name", kind)
        grid = {k: v for k, v in arm.items() if isinstance(v, list) and k != "compare"}
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
    """An arm with every setting filled in (settings it does not use are dropped)."""
    full = {"name": arm["name"], "kind": arm["kind"], "schedule": arm.get("schedule", study.schedule)}
    if arm.get("compare"):  # reporting only: also compare this arm with these arms
        full["compare"] = list(arm["compare"])
    if arm["kind"] in REFRESHING:
        full.update({k: arm.get(k, v) for k, v in PROXY_DEFAULTS.items()})
        if arm["kind"] != "keepaugment":
            full.pop("tries")
        if arm["kind"] != "proxy":
            full.pop("proxies")
        if not full["observe"]:  # listed only when on
            full.pop("observe")
    return full


def load_study(config: Optional[str], overrides: Dict[str, Any]) -> Study:
    raw: Dict[str, Any] = {}
    if config is not None:
        path = config if os.path.exists(config) or os.sep in config else os.path.join(CONFIG_DIR, config + ".toml")
        if not os.path.exists(path):
            presets = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".toml"))
            raise FileNotFoundError(f"config {config!r} not found; give a .toml/.json path or a preset: {', '.join(presets)}.")
        raw = _read_config(path)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    fields = {f.name for f in dataclasses.fields(Study)}
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
    if len(study.seeds) < 1:
        raise ValueError("seeds is empty; expected at least one seed (three or more for a comparison).")
    return study


# -- models -------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """A small VGG-style CNN for CPU runs; its last conv stage keeps 1/4 of the input resolution."""

    def __init__(self, in_chans: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> List[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = width
        self.features = nn.Sequential(
            *block(in_chans, w), *block(w, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def small_image_stem(model: nn.Module) -> nn.Module:
    """Adapt an ImageNet model to small images (CIFAR-style): first convolution with stride 1,
    no stem max-pool. The network then downsamples 4x less, so 32 px inputs keep a spatial map."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        first.stride = (1, 1)
    if isinstance(getattr(model, "maxpool", None), (nn.MaxPool2d, nn.AvgPool2d)):
        model.maxpool = nn.Identity()
    return model


def build_model(name: str, num_classes: int, in_chans: int, size: int, pretrained: bool = False, small_stem: Optional[bool] = None) -> nn.Module:
    """``"cnn"`` (the small CNN) or any timm model name; ``small_stem`` defaults to ``size <= 64``."""
    if name == "cnn":
        return SmallCNN(in_chans, num_classes)
    import timm

    model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    if small_stem if small_stem is not None else size <= 64:
        small_image_stem(model)
    return model


# -- arms -------------------------------------------------------------------------------------
def _roll_maps(maps: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Circularly shift each map ``(B, H, W)`` by its own ``shifts[b] = (dy, dx)``."""
    b, h, w = maps.shape
    rows = (torch.arange(h, device=maps.device).view(1, h) - shifts[:, :1]) % h
    cols = (torch.arange(w, device=maps.device).view(1, w) - shifts[:, 1:]) % w
    return maps[torch.arange(b, device=maps.device).view(b, 1, 1), rows.view(b, h, 1), cols.view(b, 1, w)]


def keep_cut(
    x: torch.Tensor, saliency: torch.Tensor, side: int, tries: int, generator: torch.Generator
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Black out one ``side`` x ``side`` square per image where ``saliency (B, H, W)`` is low.

    The first of ``tries`` random places whose share of the image's saliency is below an average
    region's (``side**2 / (H W)``) is taken, else the least salient place. Returns the images and
    the boxes' top-left corners ``(B, 2)``.

    Examples:
        >>> sal = torch.zeros(1, 4, 4); sal[0, :2] = 1.0  # the top half is salient
        >>> out, corner = keep_cut(torch.ones(1, 1, 4, 4), sal, 2, 10, torch.Generator().manual_seed(0))
        >>> int(corner[0, 0]) >= 2, out.sum().item()
        (True, 12.0)
    """
    b, _, h, w = x.shape
    integral = nn.functional.pad(saliency.float().cumsum(1).cumsum(2), (1, 0, 1, 0))
    total = integral[:, -1, -1].clamp_min(1e-12)
    ty = torch.randint(0, h - side + 1, (b, tries), generator=generator).to(x.device)
    tx = torch.randint(0, w - side + 1, (b, tries), generator=generator).to(x.device)
    rows = torch.arange(b, device=x.device).view(b, 1)
    mass = integral[rows, ty + side, tx + side] - integral[rows, ty, tx + side] - integral[rows, ty + side, tx] + integral[rows, ty, tx]
    share = mass / total.view(b, 1)
    ok = share < side * side / (h * w)
    first_ok = torch.where(ok.any(1), ok.float().argmax(1), share.argmin(1))
    corner = torch.stack([ty[rows.flatten(), first_ok], tx[rows.flatten(), first_ok]], 1)
    yy = torch.arange(h, device=x.device).view(1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, w)
    box = (yy >= corner[:, :1, None]) & (yy < corner[:, :1, None] + side) & (xx >= corner[:, 1:, None]) & (xx < corner[:, 1:, None] + side)
    return x.masked_fill(box.unsqueeze(1), 0.0), corner


class Arm:
    """One arm's behaviour in the training loop: what it does per batch and per round."""

    def __init__(self, spec: Dict[str, Any], ds: pa.ProxyDataset, n_train: int, image_size: Tuple[int, int],
                 preprocess: Callable[[torch.Tensor], torch.Tensor], seed: int) -> None:
        self.spec, self.ds, self.n_train, self.hw, self.preprocess = spec, ds, n_train, image_size, preprocess
        self.kind = spec["kind"]
        self.gen = torch.Generator().manual_seed(10_000 + seed)
        self.p, self.area = 0.0, 0.0  # matched probability and area (controls)
        self.shifts: Optional[torch.Tensor] = None  # random-mask: (rows, 2)
        self.observe = bool(spec.get("observe", False))
        if self.kind == "proxy":
            self.proxy = pa.ProxyTransform(ds.bank, mode=spec["mode"], threshold=spec["threshold"], weight=spec["weight"])

    # state for checkpoints
    def state_dict(self) -> Dict[str, Any]:
        return {"p": self.p, "area": self.area, "shifts": self.shifts, "gen": self.gen.get_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.p, self.area, self.shifts = state["p"], state["area"], state["shifts"]
        if self.shifts is not None:  # checkpoints are read onto the CPU
            self.shifts = self.shifts.to(self.ds.bank.device)
        self.gen.set_state(state["gen"])
        self._configure_cpu_transform()

    def _full(self, maps: torch.Tensor) -> torch.Tensor:
        """Maps ``(B, h, w)`` upsampled and normalised to the image size ``(B, H, W)``."""
        return PF.upsample_maps(maps.float(), self.hw)[:, 0]

    def _masks(self, rows: torch.Tensor) -> torch.Tensor:
        return self._full(self.ds.bank.get(rows)[0])

    def apply(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, model: nn.Module) -> torch.Tensor:
        if self.kind == "proxy":
            return self.proxy(x, idx)
        if self.kind == "random-mask" and self.shifts is not None:
            idx = idx.to(x.device)
            maps, present = self.ds.bank.get(idx)
            moved = _roll_maps(self._full(maps), self.shifts[idx])
            s = self.spec
            return PF.replace(x, moved, s["mode"], s["threshold"], s["weight"], present=present)
        if self.kind == "random-erasing" and self.p > 0 and self.area > 0:
            import kornia.augmentation as K

            return K.RandomErasing(scale=(self.area, self.area), ratio=(0.3, 3.3), value=0.0, p=self.p)(x)
        if self.kind == "keepaugment" and self.p > 0 and self.area > 0:
            chosen = (torch.rand(len(x), generator=self.gen) < self.p).nonzero().flatten().to(x.device)
            if chosen.numel() == 0:
                return x
            xs = x[chosen].detach().requires_grad_(True)
            with eval_mode(model), torch.enable_grad():  # saliency of the current model, no BN update
                loss = nn.functional.cross_entropy(model(self.preprocess(xs)), y[chosen], reduction="sum")
                (grad,) = torch.autograd.grad(loss, xs)
            side = max(1, round(math.sqrt(self.area * self.hw[0] * self.hw[1])))
            cut, _ = keep_cut(x[chosen], grad.abs().amax(1), min(side, *self.hw), self.spec["tries"], self.gen)
            x = x.clone()
            x[chosen] = cut
        return x

    def _configure_cpu_transform(self) -> None:
        if self.kind != "cutout":
            return
        if self.p <= 0 or self.area <= 0:
            self.ds.transform = None
            return
        import albumentations as A

        from proxyaug.integrations.albumentations import Albumentations

        side = max(1, min(round(math.sqrt(self.area * self.hw[0] * self.hw[1])), *self.hw))
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.gen))
        hole = A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(side, side), hole_width_range=(side, side), fill=0, p=self.p)
        self.ds.transform = Albumentations(A.Compose([hole], seed=seed))

    def refresh(self, model: nn.Module) -> Dict[str, Any]:
        """Run the arm's refresh and update what the arm applies; return the round's record."""
        s = self.spec
        report = self.ds.refresh(
            model, method=s["method"], fraction=s["fraction"], select=s["select"], layer=s["layer"],
            preprocess=self.preprocess, progress=False,
        )
        rows = self.ds.bank.present.nonzero().flatten()
        area = float((self._masks(rows) > s["threshold"]).float().mean()) if rows.numel() else 0.0
        self.p, self.area = rows.numel() / self.n_train, area
        if self.kind == "random-mask":
            h, w = self.hw
            self.shifts = torch.stack([torch.randint(0, h, (len(self.ds.bank),), generator=self.gen),
                                       torch.randint(0, w, (len(self.ds.bank),), generator=self.gen)], 1).to(self.ds.bank.device)
        self._configure_cpu_transform()
        return {
            "scanned": report.scanned, "wrong": report.wrong, "written": report.written, "maps": int(rows.numel()),
            "masked_area": area, "p": self.p, "seconds": report.seconds, "layer": report.layer,
            "new_rows": self.ds.rows(report.indices).tolist(),
        }

    def pictures(self, rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Originals, maps and what this arm made of them, for rows that have a map."""
        device = self.ds.bank.device
        base = rows % len(self.ds.dataset)
        x = torch.stack([self.ds.dataset[int(i)][0] for i in base]).to(device)
        maps, _ = self.ds.bank.get(rows)
        if self.kind == "random-mask":
            maps = _roll_maps(self._full(maps), self.shifts[rows.to(device)])
            s = self.spec
            out = PF.replace(x, maps, s["mode"], s["threshold"], s["weight"])
        else:
            out = self.proxy(x, rows, params={"apply": torch.ones(len(rows), dtype=torch.bool, device=device)})
        return x.cpu(), maps.float().cpu(), out.cpu()


# -- one run ------------------------------------------------------------------------------------
def _slug(name: str) -> str:
    """``name`` as a file name: characters other than letters, digits, ``.``, ``_``, ``-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")



@torch.no_grad()
def accuracy(model: nn.Module, dataset: Any, preprocess: Callable, device: torch.device, batch_size: int = 512, workers: int = 0) -> float:
    model.eval()
    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        pred = model(preprocess(x.to(device))).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    return correct / total


def run_key(dataset: str, model: str, arm: Dict[str, Any], seed: int, study: Study) -> str:
    """A run's identity: everything that shapes its training (reporting options excluded)."""
    arm = {k: v for k, v in arm.items() if k != "compare"}
    ident = json.dumps({"dataset": dataset, "model": model, "arm": arm, "seed": seed, **study.training_settings()}, sort_keys=True, default=str)
    return hashlib.sha1(ident.encode()).hexdigest()[:16]


def _thesis_split(labels: torch.Tensor, val_fraction: float, seed: int, round_: int, fixed: Tuple[torch.Tensor, torch.Tensor]):
    """Round 0 uses the study's split; each later round draws a new one from the pool."""
    return fixed if round_ == 0 else split_pool(labels, val_fraction, seed=1_000_003 * (seed + 1) + round_)


def load_checkpoint(path: str) -> Dict[str, Any]:
    """A run's checkpoint, read onto the CPU whatever the run's device.

    The RNG states must stay CPU byte tensors (``torch.set_rng_state``, ``Generator.set_state``);
    the model, optimizer and bank states reach the run's device as they load (their
    ``load_state_dict`` copies into tensors already there).
    """
    return torch.load(path, map_location="cpu", weights_only=False)


def train_run(study: Study, data: Data, model_name: str, arm: Dict[str, Any], seed: int, *,
              checkpoint: Optional[str] = None, grid_dir: Optional[str] = None, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train one (dataset, model, arm, seed) run; return its record."""
    device = torch.device(study.device)
    schedule = pa.ProxySchedule.parse(arm["schedule"])
    epochs = schedule.epochs
    fixed = split_pool(data.pool_labels, study.val_fraction, study.split_seed)
    mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
    preprocess = lambda x: (x - mean) / std  # noqa: E731
    kind = arm["kind"]

    torch.manual_seed(seed)
    model = build_model(model_name, data.num_classes, data.channels, study.size, study.pretrained, study.small_stem).to(device)
    train_idx, val_idx = fixed
    n_train = len(train_idx)

    def make_dataset(indices: torch.Tensor) -> pa.ProxyDataset:
        return pa.ProxyDataset(Subset(data.pool, indices.tolist()), device=device, proxies=arm.get("proxies", "replace"))

    ds = make_dataset(train_idx)
    h, w = ds.dataset[0][0].shape[-2:]
    control = Arm(arm, ds, n_train, (int(h), int(w)), preprocess, seed)
    sampler_gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(n_train / study.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=study.lr, momentum=study.momentum, weight_decay=study.weight_decay, nesterov=True)
    lr_sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=study.lr, total_steps=epochs * steps_per_epoch)
    history: Dict[str, Any] = {"test_acc": [], "val_acc": [], "loss": [], "rounds": [], "splits": [split_fingerprint(train_idx)], "images_seen": 0, "wall_s": 0.0}
    start_epoch, round_ = 0, 0

    if checkpoint and os.path.exists(checkpoint):
        state = load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        lr_sched.load_state_dict(state["lr_sched"])
        train_idx, val_idx, round_ = state["train_idx"], state["val_idx"], state["round"]
        if kind == "thesis-protocol":
            ds = make_dataset(train_idx)
            control.ds = ds
        ds.load_state_dict(state["ds"])
        control.load_state_dict(state["arm"])
        torch.set_rng_state(state["rng"])
        sampler_gen.set_state(state["sampler_gen"])
        history, start_epoch = state["history"], state["epoch"] + 1
        log(f"resumed from {checkpoint} after epoch {start_epoch}")

    def loader_for(d: pa.ProxyDataset) -> DataLoader:
        sampler = RandomSampler(d, num_samples=n_train, generator=sampler_gen)  # equal images per epoch, every arm
        return DataLoader(d, batch_size=study.batch_size, sampler=sampler, num_workers=study.workers)

    loader = loader_for(ds)
    tag = f"[{data.name} {model_name} {arm['name']} seed {seed}]"
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        model.train()
        total_loss, seen = torch.zeros((), device=device), 0
        for x, y, idx in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x = control.apply(x, y, idx, model)
            logits = model(preprocess(x))
            if control.observe:
                ds.observe(idx, logits, y)
            loss = nn.functional.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr_sched.step()
            total_loss += loss.detach() * len(y)  # summed on the device: no host sync per step
            seen += len(y)
        history["images_seen"] += seen
        history["loss"].append(float(total_loss) / seen)
        test_acc = accuracy(model, data.test, preprocess, device, workers=study.workers)
        val_acc = accuracy(model, Subset(data.pool, val_idx.tolist()), preprocess, device, workers=study.workers)
        history["test_acc"].append(test_acc)
        history["val_acc"].append(val_acc)
        note = ""
        if schedule.should_refresh(epoch):
            round_ += 1
            if kind in REFRESHING:
                rec = control.refresh(model)
                rec["epoch"] = epoch
                history["rounds"].append({k: v for k, v in rec.items() if k != "new_rows"})
                note = f" | refresh: {rec['wrong']} wrong, {rec['written']} maps, {rec['maps']} in bank, area {rec['masked_area']:.3f}, p {rec['p']:.3f}"
                if grid_dir and study.grids and kind in ("proxy", "random-mask") and rec["new_rows"]:
                    rows = torch.as_tensor(rec["new_rows"][: study.grids])
                    x0, maps, out = control.pictures(rows)
                    scale = max(1, 96 // max(h, w))
                    up = lambda t: nn.functional.interpolate(t, scale_factor=scale, mode="nearest")  # noqa: E731
                    # maps at the image size, scaled as the images are: the outline is exactly the replaced pixels
                    full = up(control._full(maps).unsqueeze(1))[:, 0]
                    titles = ("original", "map", "proxy") if kind == "proxy" else ("original", "moved map", "random mask")
                    path = os.path.join(grid_dir, _slug(f"{data.name}-{model_name}-{arm['name']}-seed{seed}-refresh{round_}") + ".png")
                    pa.viz.save_proxy_grid(path, up(x0), full, up(out), outline=arm["threshold"], titles=titles)
            elif kind == "thesis-protocol":
                train_idx, val_idx = _thesis_split(data.pool_labels, study.val_fraction, seed, round_, fixed)
                ds = make_dataset(train_idx)
                control.ds = ds
                loader = loader_for(ds)
                note = f" | re-split: new train/val split {split_fingerprint(train_idx)}"
            history["splits"].append(split_fingerprint(train_idx))
        history["wall_s"] += time.perf_counter() - t0
        if checkpoint:
            torch.save({
                "epoch": epoch, "model": model.state_dict(), "opt": opt.state_dict(), "lr_sched": lr_sched.state_dict(),
                "ds": ds.state_dict(), "arm": control.state_dict(), "rng": torch.get_rng_state(),
                "sampler_gen": sampler_gen.get_state(), "history": history, "train_idx": train_idx, "val_idx": val_idx, "round": round_,
            }, checkpoint + ".tmp")
            os.replace(checkpoint + ".tmp", checkpoint)
        log(f"{tag} epoch {epoch + 1:2d}/{epochs} loss {history['loss'][-1]:.4f} val {100 * val_acc:6.2f} % test {100 * test_acc:6.2f} %{note}")

    rounds = history["rounds"]
    return {
        "dataset": data.name, "model": model_name, "arm": arm["name"], "kind": kind, "seed": seed, "epochs": epochs,
        "test_acc": history["test_acc"][-1], "val_acc": history["val_acc"][-1], "wall_s": history["wall_s"],
        "images_seen": history["images_seen"], "train_size": n_train, "test_size": len(data.test),
        "maps_final": rounds[-1]["maps"] if rounds else 0,
        "masked_area_mean": statistics.fmean(r["masked_area"] for r in rounds) if rounds else 0.0,
        "refresh_s": sum(r["seconds"] for r in rounds),
        "settings": {k: v for k, v in arm.items() if k not in ("name", "kind", "compare")},
        "test_acc_curve": history["test_acc"], "val_acc_curve": history["val_acc"], "loss_curve": history["loss"],
        "rounds": rounds, "splits": history["splits"],
    }


# -- the study --------------------------------------------------------------------------------
CSV_COLUMNS = ["dataset", "model", "arm", "kind", "seed", "epochs", "test_acc", "val_acc", "wall_s", "images_seen",
               "train_size", "maps_final", "masked_area_mean", "refresh_s", "schedule", "method", "mode", "threshold",
               "weight", "fraction", "select", "proxies", "lr", "batch_size", "size", "pretrained", "key"]


def _csv_row(record: Dict[str, Any], study: Study) -> Dict[str, Any]:
    row = {k: record.get(k, "") for k in CSV_COLUMNS}
    row.update({k: v for k, v in record["settings"].items() if k in CSV_COLUMNS})
    row.update({"lr": study.lr, "batch_size": study.batch_size, "size": study.size, "pretrained": study.pretrained})
    for k in ("test_acc", "val_acc", "masked_area_mean"):
        row[k] = f"{record[k]:.6f}"
    for k in ("wall_s", "refresh_s"):
        row[k] = f"{record[k]:.2f}"
    return row


def _load_done(path: str) -> Dict[str, Dict[str, Any]]:
    done: Dict[str, Dict[str, Any]] = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    done[rec["key"]] = rec
    return done


def run_study(study: Study, log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Run every (dataset, model, arm, seed) not finished yet; return the study's records."""
    if study.threads:
        torch.set_num_threads(study.threads)
    os.makedirs(study.out, exist_ok=True)
    for sub in ("checkpoints", "grids"):
        os.makedirs(os.path.join(study.out, sub), exist_ok=True)
    jsonl = os.path.join(study.out, "runs.jsonl")
    done = _load_done(jsonl)
    plan = [(d, m, arm_settings(a, study), s) for d in study.datasets for m in study.models for s in study.seeds for a in study.arms]
    keys = [run_key(d, m, a, s, study) for d, m, a, s in plan]
    todo = sum(k not in done for k in keys)
    log(f"study: {len(plan)} runs ({len(plan) - todo} already done) -> {study.out}")
    data_cache: Dict[str, Data] = {}
    for n, ((dname, mname, arm, seed), key) in enumerate(zip(plan, keys), 1):
        if key in done:
            continue
        if dname not in data_cache:
            data_cache = {dname: load_data(dname, study.size, study.root, study.test_fraction, study.split_seed, study.cue_strength)}
            log(data_cache[dname].info)
        log(f"run {n}/{len(plan)}: {dname} / {mname} / {arm['name']} / seed {seed}")
        ckpt = os.path.join(study.out, "checkpoints", key + ".pt")
        grid_dir = os.path.join(study.out, "grids") if seed == study.seeds[0] else None
        record = train_run(study, data_cache[dname], mname, arm, seed, checkpoint=ckpt, grid_dir=grid_dir, log=log)
        record["key"] = key
        with open(jsonl, "a") as f:
            f.write(json.dumps(record) + "\n")
        done[key] = record
        os.remove(ckpt)
    records = [done[k] for k in keys]
    with open(os.path.join(study.out, "runs.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in records:
            writer.writerow(_csv_row(r, study))
    return records


# -- statistics and the report ---------------------------------------------------------------
def describe(values: List[float]) -> Dict[str, float]:
    n = len(values)
    return {"n": n, "mean": statistics.fmean(values), "std": statistics.stdev(values) if n > 1 else 0.0, "min": min(values), "max": max(values)}


def paired(a: List[float], b: List[float]) -> Dict[str, float]:
    """Mean of ``a[i] - b[i]`` with a two-sided 95 % t-interval (the seeds are the pairs).

    Examples:
        >>> d = paired([0.9, 0.8, 0.85], [0.8, 0.8, 0.8])
        >>> round(d["mean"], 3), d["ci95_low"] < d["mean"] < d["ci95_high"]
        (0.05, True)
    """
    diffs = [x - y for x, y in zip(a, b)]
    n, mean = len(diffs), statistics.fmean(diffs)
    if n < 2:
        return {"n": n, "mean": mean, "ci95_low": float("nan"), "ci95_high": float("nan")}
    from scipy.stats import t

    half = float(t.ppf(0.975, n - 1)) * statistics.stdev(diffs) / math.sqrt(n)
    return {"n": n, "mean": mean, "ci95_low": mean - half, "ci95_high": mean + half}


def verdict(d: Dict[str, float]) -> str:
    """``better`` / ``worse`` when the 95 % interval excludes 0 (three or more pairs), else
    ``no detectable difference``."""
    if d["n"] < 3 or math.isnan(d["ci95_low"]):
        return "too few seeds to tell"
    if d["ci95_low"] > 0:
        return "better"
    if d["ci95_high"] < 0:
        return "worse"
    return "no detectable difference"


def summarize(records: List[Dict[str, Any]], baseline: str = "baseline", compare_with: Optional[Dict[str, List[str]]] = None) -> Dict[str, Any]:
    """Per (dataset, model): each arm's accuracy and its paired difference to ``baseline``, to
    the controls (for Proxy Attention arms) and to the arms in ``compare_with[arm]``."""
    compare_with = compare_with or {}
    groups: Dict[str, Any] = {}
    for dname, mname in dict.fromkeys((r["dataset"], r["model"]) for r in records):
        rs = [r for r in records if (r["dataset"], r["model"]) == (dname, mname)]
        arms = list(dict.fromkeys(r["arm"] for r in rs))
        by = {a: {r["seed"]: r for r in rs if r["arm"] == a} for a in arms}
        group: Dict[str, Any] = {"arms": {}, "comparisons": []}
        for a in arms:
            runs = [by[a][s] for s in sorted(by[a])]
            entry = {
                "kind": runs[0]["kind"], "test_acc": describe([r["test_acc"] for r in runs]),
                "val_acc": describe([r["val_acc"] for r in runs]), "wall_s": describe([r["wall_s"] for r in runs]),
                "masked_area": describe([r["masked_area_mean"] for r in runs]), "maps_final": describe([r["maps_final"] for r in runs]),
                "settings": runs[0]["settings"],
            }
            group["arms"][a] = entry
        def compare(a: str, b: str) -> None:
            seeds = sorted(set(by[a]) & set(by[b]))
            if seeds:
                d = paired([by[a][s]["test_acc"] for s in seeds], [by[b][s]["test_acc"] for s in seeds])
                group["comparisons"].append({"arm": a, "versus": b, **d, "verdict": verdict(d)})
        if baseline in by:
            for a in arms:
                if a != baseline:
                    compare(a, baseline)
        controls = [a for a in arms if by[a][next(iter(by[a]))]["kind"] in ("random-mask", "random-erasing", "cutout", "keepaugment")]
        for a in arms:
            if group["arms"][a]["kind"] == "proxy":
                for c in controls:
                    compare(a, c)
        for a in arms:
            for other in compare_with.get(a, []):
                if other in by:
                    compare(a, other)
        groups[f"{dname} / {mname}"] = group
    return groups


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _pp(d: Dict[str, float]) -> str:
    return f"{100 * d['mean']:+.2f} pp [{100 * d['ci95_low']:+.2f}, {100 * d['ci95_high']:+.2f}]"


def _describe_arm(name: str, entry: Dict[str, Any]) -> str:
    s, kind = entry["settings"], entry["kind"]
    matched = f"area and share matched to {s.get('method')} masks"
    described = {
        "none": "no proxy",
        "thesis-protocol": "no proxy; train/val re-drawn every round",
        "random-mask": f"the proxy masks ({s.get('mode')}) moved to random places",
        "random-erasing": f"Kornia RandomErasing, black; {matched}",
        "cutout": f"albumentations CoarseDropout, black; {matched}",
        "keepaugment": f"black square off the salient region; {matched}",
    }
    if kind in described:
        return described[kind]
    if s.get("mode") == "blend" and s.get("weight") == 0:
        return f"unchanged copies of the images {s.get('method')} maps would mark{'; as extra samples' if s.get('proxies') == 'append' else ''}"
    how = f"weight {s.get('weight')}" if s.get("mode") == "blend" else ""
    extra = "; as extra samples" if s.get("proxies") == "append" else ""
    return f"{s.get('mode')}{' ' + how if how else ''}, threshold {s.get('threshold')}; {s.get('method')} on {s.get('fraction'):.0%} of wrong{extra}"


def markdown_report(study: Study, records: List[Dict[str, Any]], summary: Dict[str, Any], env: Dict[str, Any], command: str, total_s: float) -> str:
    """The study's report (markdown), generated from its records and summary."""
    test_sizes = sorted({r.get("test_size", 0) for r in records} - {0})
    lines = [
        f"Generated by `{command}` from its `runs.jsonl`, at commit `{env['commit']}`.",
        "",
        f"Machine: {env['machine']}, {env['cpu_count']} cores, {env['torch_threads']} torch threads, device {env['device']}; "
        f"Python {env['python']}, torch {env['torch']}, proxyaug {env['proxyaug']}. Training time of all runs: {total_s / 60:.0f} min.",
        "",
        f"Protocol: one fixed stratified split per dataset (pool -> {1 - study.val_fraction:.0%} train / {study.val_fraction:.0%} validation, "
        f"test held out), schedule `{study.schedule}` ({pa.ProxySchedule.parse(study.schedule).epochs} epochs) for every arm, "
        f"SGD (Nesterov, momentum {study.momentum}, weight decay {study.weight_decay}) with one-cycle LR (max {study.lr}), "
        f"batch {study.batch_size}, {study.size}x{study.size} images, the same number of images per epoch for every arm, "
        f"seeds {study.seeds} (seed s: the same initial weights in every arm). Differences are paired by seed: mean and "
        "95 % t-interval, in percentage points (pp) of test accuracy"
        + (f" (one test image is {100 / test_sizes[0]:.2f} pp)" if len(test_sizes) == 1 else "")
        + ". Verdict: *better* / *worse* when the interval excludes 0, else *no detectable difference*. "
        f"This report holds {sum(len(g['comparisons']) for g in summary.values())} intervals: with no effect anywhere, about "
        "1 in 20 would still exclude 0 by chance, so a lone *better* or *worse* is weak evidence; a real effect shows up "
        "consistently across datasets, models and against the controls.",
        "",
        "## Verdict",
        "",
    ]
    for group, g in summary.items():
        base = g["arms"].get("baseline")
        if base is None:
            continue
        comps = {c["arm"]: c for c in g["comparisons"] if c["versus"] == "baseline"}
        lines += [f"**{group}**: baseline {_pct(base['test_acc']['mean'])} ± {_pct(base['test_acc']['std'])} % test accuracy.", ""]
        for a, e in g["arms"].items():
            c = comps.get(a)
            if c is None or e["kind"] == "thesis-protocol":
                continue
            lines.append(f"- {a} ({_describe_arm(a, e)}): {c['verdict']}, {_pp(c)}")
        proxy_vs = [c for c in g["comparisons"] if c["arm"] == "proxy" and c["versus"] != "baseline"]
        if proxy_vs:
            lines.append("- proxy versus the controls (does the map matter?): " + "; ".join(
                f"{c['versus']} {c['verdict']}, {_pp(c)}" for c in proxy_vs))
        for a, e in g["arms"].items():
            if e["kind"] != "thesis-protocol" or a not in comps:
                continue
            c = comps[a]
            leak = e["val_acc"]["mean"] - e["test_acc"]["mean"]
            honest = base["val_acc"]["mean"] - base["test_acc"]["mean"]
            lines.append(
                f"- {a} (no proxy, train/val re-drawn every round): its validation accuracy, the number the thesis reported, is "
                f"{_pct(e['val_acc']['mean'])} %: validation minus test {100 * leak:+.2f} pp, against {100 * honest:+.2f} pp for the "
                f"baseline's fixed split, so re-splitting inflates validation by {100 * (leak - honest):+.2f} pp. "
                f"On test, against the baseline: {c['verdict']}, {_pp(c)}."
            )
        lines.append("")
    lines += ["## Results", ""]
    for group, g in summary.items():
        lines += [
            f"### {group}", "",
            "| arm | what | seeds | test acc % (mean ± sd) | min .. max | vs baseline, pp (95 % CI) | verdict | val acc % | maps at end | masked area | s / run |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        comp = {c["arm"]: c for c in g["comparisons"] if c["versus"] == "baseline"}
        for a, e in g["arms"].items():
            t = e["test_acc"]
            c = comp.get(a)
            refreshing = e["kind"] in REFRESHING
            maps = f"{e['maps_final']['mean']:.0f}" if refreshing else "—"
            area = f"{e['masked_area']['mean']:.3f}" if refreshing else "—"
            lines.append(
                f"| {a} | {_describe_arm(a, e)} | {t['n']} | {_pct(t['mean'])} ± {_pct(t['std'])} | {_pct(t['min'])} .. {_pct(t['max'])} | "
                f"{_pp(c) if c else '—'} | {c['verdict'] if c else '—'} | {_pct(e['val_acc']['mean'])} | {maps} | {area} | {e['wall_s']['mean']:.0f} |"
            )
        rounds = [r["rounds"] for r in records if (r["dataset"], r["model"], r["arm"]) == (*group.split(" / "), "proxy")]
        if rounds and rounds[0]:
            per_round = "; ".join(
                f"{min(rs[k]['wrong'] for rs in rounds)}..{max(rs[k]['wrong'] for rs in rounds)} after epoch {rounds[0][k]['epoch'] + 1}"
                for k in range(min(len(rs) for rs in rounds))
            )
            maps = [rs[-1]["maps"] for rs in rounds]
            lines += ["", f"Refreshes of the `proxy` arm, min..max over seeds: wrongly predicted training images {per_round} "
                          f"(of {records[0]['train_size']}); images with a map at the end {min(maps)}..{max(maps)}."]
        versus = [c for c in g["comparisons"] if c["versus"] != "baseline"]
        if versus:
            lines += ["", "Proxy Attention arms against each control (paired by seed):", "",
                      "| arm | control | difference, pp (95 % CI) | verdict |", "|---|---|---|---|"]
            lines += [f"| {c['arm']} | {c['versus']} | {_pp(c)} | {c['verdict']} |" for c in versus]
        lines.append("")
    lines += [
        "Columns: *val acc*: the validation split's accuracy (for `thesis-protocol`, its last round's split, which overlaps "
        "its earlier training images); *maps at end*: training images with a map after the last refresh; *masked area*: "
        "mean share of an image's pixels above the threshold, over the rounds (the controls match it, and the share of "
        "images with a map); *s / run*: training wall time, refreshes included.",
        "",
    ]
    return "\n".join(lines)


def plots(out: str, records: List[Dict[str, Any]], summary: Dict[str, Any], study: Study) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    refresh_epochs = pa.ProxySchedule.parse(study.schedule).refresh_epochs
    for group, g in summary.items():
        dname, mname = group.split(" / ")
        fig, ax = plt.subplots(figsize=(7, 4.2))
        means = []
        for a in g["arms"]:
            curves = torch.tensor([r["test_acc_curve"] for r in records if (r["dataset"], r["model"], r["arm"]) == (dname, mname, a)]) * 100
            epochs = torch.arange(1, curves.shape[1] + 1)
            means.append(curves.mean(0))
            ax.plot(epochs, means[-1], label=a, lw=1.4)
        for e in refresh_epochs:
            ax.axvline(e + 1, color="grey", lw=0.8, ls=":")
        ax.set(xlabel="epoch (dotted: refresh / re-split after it)", ylabel="test accuracy (%), mean over seeds", title=f"{dname}, {mname}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        values = torch.cat(means)  # every epoch of every curve is shown, the first ones included
        lo, hi = float(values.min()), float(values.max())
        pad = max(1.0, 0.05 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = os.path.join(out, _slug(f"accuracy-{dname}-{mname}") + ".png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    groups = list(summary)
    def bar_panels(name: str, rows: Callable[[str], Tuple[List[str], List[float], Any, List[str]]], title: str, zero: bool) -> None:
        """One horizontal bar chart per group: ``rows(group) -> (labels, values, errors, colours)``."""
        fig, axes = plt.subplots(len(groups), 1, figsize=(7.5, 2.6 * len(groups)), squeeze=False)
        for ax, group in zip(axes[:, 0], groups):
            labels, values, errors, colors = rows(group)
            ax.barh(range(len(labels)), values, xerr=errors, color=colors, capsize=3)
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.invert_yaxis()
            if zero:
                ax.axvline(0, color="black", lw=0.8)
            else:  # accuracies: zoom on the bars
                lo, hi = min(v - e for v, e in zip(values, errors)), max(v + e for v, e in zip(values, errors))
                ax.set_xlim(max(0.0, lo - 2), min(100.0, hi + 1))
            ax.set_title(f"{group}: {title}", fontsize=9)
        fig.tight_layout()
        path = os.path.join(out, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    def accuracies(group: str) -> Tuple[List[str], List[float], Any, List[str]]:
        arms = summary[group]["arms"]
        return (list(arms), [100 * e["test_acc"]["mean"] for e in arms.values()], [100 * e["test_acc"]["std"] for e in arms.values()],
                [_COLORS.get(e["kind"], "C1") for e in arms.values()])

    def differences(group: str) -> Tuple[List[str], List[float], Any, List[str]]:
        comps = [c for c in summary[group]["comparisons"] if c["versus"] == "baseline"]
        kinds = summary[group]["arms"]
        err = [[100 * (c["mean"] - c["ci95_low"]) for c in comps], [100 * (c["ci95_high"] - c["mean"]) for c in comps]]
        return [c["arm"] for c in comps], [100 * c["mean"] for c in comps], err, [_COLORS.get(kinds[c["arm"]]["kind"], "C1") for c in comps]

    bar_panels("bars.png", accuracies, "test accuracy, mean ± sd over seeds", zero=False)
    bar_panels("differences.png", differences, "arm minus baseline, test accuracy pp (paired, 95 % CI)", zero=True)
    return written


_COLORS = {"none": "grey", "proxy": "C0", "thesis-protocol": "C2"}  # controls and peers: C1


def report(study: Study, records: List[Dict[str, Any]], command: str, total_s: float) -> Dict[str, Any]:
    summary = summarize(records, compare_with={a["name"]: a["compare"] for a in study.arms if a.get("compare")})
    env = environment(study.device)
    with open(os.path.join(study.out, "summary.json"), "w") as f:
        json.dump({"study": dataclasses.asdict(study), "environment": env, "command": command, "summary": summary}, f, indent=2)
    with open(os.path.join(study.out, "report.md"), "w") as f:
        f.write(markdown_report(study, records, summary, env, command, total_s))
    plots(study.out, records, summary, study)
    return summary


def parse_args(argv: Optional[List[str]]) -> Tuple[Optional[str], Dict[str, Any], argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    config, overrides, args = parse_args(argv)
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
    command = " ".join(["python -m benchmarks.train", *(sys.argv[1:] if argv is None else argv)])
    start = time.perf_counter()
    if args.report_only:
        done = _load_done(os.path.join(study.out, "runs.jsonl"))
        records = [done[k] for k in (run_key(d, m, arm_settings(a, study), s, study) for d in study.datasets for m in study.models
                                     for s in study.seeds for a in study.arms) if k in done]
    else:
        records = run_study(study)
    total = sum(r["wall_s"] for r in records)
    summary = report(study, records, command, total)
    print()
    for group, g in summary.items():
        print(group)
        for a, e in g["arms"].items():
            t = e["test_acc"]
            print(f"  {a:28s} test {100 * t['mean']:6.2f} ± {100 * t['std']:5.2f} %  val {100 * e['val_acc']['mean']:6.2f} %  ({t['n']} seeds, {e['wall_s']['mean']:.0f} s/run)")
        for c in g["comparisons"]:
            print(f"  {c['arm']} - {c['versus']}: {_pp(c)} -> {c['verdict']}")
    print(f"wrote {study.out}/report.md, runs.csv, summary.json, plots ({time.perf_counter() - start:.0f} s)")
    return summary


if __name__ == "__main__":
    main()
