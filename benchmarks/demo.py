"""The demo (``make demo``): does Proxy Attention change a small CNN on real handwritten digits?

Two arms, trained identically except for Proxy Attention:

- ``baseline``: plain training.
- ``proxy``: the thesis defaults (Grad-CAM++, threshold 0.85, blend weight 0.1, 20 % of the wrong
  training images per refresh) on a thesis-notation schedule that refreshes three times.

Both arms use one fixed seeded train/test split, the same epochs, optimizer, learning-rate
schedule and number of images per epoch, and the same seeds (so seed ``s`` of each arm starts
from the same weights and sees the same batch order: a paired comparison). Reported: test
accuracy mean and spread per arm, the paired difference with a 95 % t-interval, and wall time.

Writes to ``--out`` (default ``runs/demo``): ``results.json``, ``accuracy.png`` and
``proxy_grid.png`` (original | Grad-CAM++ map | proxy image for refreshed training samples).

Run: ``python -m benchmarks.demo`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

import torch
from torch import nn
from torch.utils.data import DataLoader

import proxyaug as pa

from .digits import load_digits_split

MEAN, STD = 0.5, 0.5


def normalize(x: torch.Tensor) -> torch.Tensor:
    """The model's input normalisation; applied after the proxy transform and in refresh."""
    return (x - MEAN) / STD


class DigitsCNN(nn.Module):
    """A small VGG-style CNN for 1x32x32 inputs; its last conv stage gives 8x8 maps."""

    def __init__(self, classes: int = 10, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> List[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = width
        self.features = nn.Sequential(
            *block(1, w), *block(w, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * w, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def accuracy(model: nn.Module, data: torch.utils.data.TensorDataset) -> float:
    model.eval()
    device = next(model.parameters()).device
    x, y = data.tensors
    correct = sum(int((model(normalize(xb.to(device))).argmax(1).cpu() == yb).sum()) for xb, yb in zip(x.split(512), y.split(512)))
    return correct / len(y)


def train_run(arm: str, seed: int, args: argparse.Namespace, train, test, log) -> Dict[str, Any]:
    """Train one arm with one seed; return its record."""
    schedule = pa.ProxySchedule.parse(args.schedule)
    epochs = schedule.epochs
    device = torch.device(getattr(args, "device", "cpu"))
    torch.manual_seed(seed)
    model = DigitsCNN().to(device)
    ds = pa.ProxyDataset(train, device=device)
    proxy = pa.ProxyTransform(ds.bank, mode=args.mode, threshold=args.threshold, weight=args.weight)
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    lr_sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=epochs * len(loader))
    curve, refreshes, images_seen = [], [], 0
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        total_loss = 0.0
        for x, y, idx in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if arm == "proxy":
                x = proxy(x, idx)
            logits = model(normalize(x))
            if arm == "proxy" and getattr(args, "observe", False):
                ds.observe(idx, logits, y)  # the next refresh scans only these mistakes
            loss = nn.functional.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr_sched.step()
            total_loss += loss.item() * len(y)
            images_seen += len(y)
        acc = accuracy(model, test)
        curve.append(acc)
        note = ""
        if arm == "proxy" and schedule.should_refresh(epoch):
            report = ds.refresh(
                model, method=args.method, fraction=args.fraction, preprocess=normalize, progress=False
            )
            refreshes.append({"epoch": epoch, **_report_dict(report)})
            note = f"  | refresh: {report.wrong} wrong of {report.scanned}, {report.written} maps, {report.seconds:.2f} s"
        log(f"[{arm:8s} seed {seed}] epoch {epoch + 1:2d}/{epochs}  loss {total_loss / len(ds):.4f}  test acc {100 * acc:6.2f} %{note}")
    wall = time.perf_counter() - start
    mapped = ds.bank.present.nonzero().flatten().cpu()[: args.grid]
    grid = _grid_samples(ds, proxy, mapped) if mapped.numel() else None
    return {
        "arm": arm, "seed": seed, "epochs": epochs, "test_acc": curve[-1], "test_acc_curve": curve,
        "train_acc": accuracy(model, train), "images_seen": images_seen, "wall_s": wall,
        "refresh_s": sum(r["seconds"] for r in refreshes), "refreshes": refreshes,
        "maps_in_bank": int(ds.bank.present.sum()), "_grid": grid,
    }


def _report_dict(report: pa.RefreshReport) -> Dict[str, Any]:
    keys = ("scanned", "wrong", "chosen", "written", "seconds", "method", "layer", "source")
    return {k: getattr(report, k) for k in keys}


def _grid_samples(ds: pa.ProxyDataset, proxy: pa.ProxyTransform, idx: torch.Tensor):
    x = torch.stack([ds[int(i)][0] for i in idx]).to(ds.bank.device)
    maps, _ = ds.bank.get(idx)
    out = proxy(x, idx, params={"apply": torch.ones(len(idx), dtype=torch.bool, device=x.device)})
    return x.cpu(), maps.cpu(), out.cpu()


def summarize(values: List[float]) -> Dict[str, float]:
    n = len(values)
    return {
        "n": n, "mean": statistics.fmean(values), "std": statistics.stdev(values) if n > 1 else 0.0,
        "min": min(values), "max": max(values),
    }


def paired_difference(a: List[float], b: List[float]) -> Dict[str, float]:
    """Mean of ``a[i] - b[i]`` with a two-sided 95 % t-interval (seeds are the pairs)."""
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    mean = statistics.fmean(diffs)
    if n < 2:
        return {"n": n, "mean": mean, "ci95_low": float("nan"), "ci95_high": float("nan")}
    from scipy.stats import t

    half = t.ppf(0.975, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return {"n": n, "mean": mean, "ci95_low": mean - half, "ci95_high": mean + half}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str = "cpu") -> Dict[str, Any]:
    device_name = torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else "cpu"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "machine": f"{_cpu_model()} ({platform.machine()}, {platform.system()})", "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "device": device_name, "python": platform.python_version(),
        "torch": torch.__version__, "proxyaug": pa.__version__, "commit": commit,
    }


def save_pictures(out: str, runs: List[Dict[str, Any]], args: argparse.Namespace) -> List[str]:
    written = []
    grid = next((r["_grid"] for r in runs if r["arm"] == "proxy" and r["_grid"] is not None), None)
    if grid is not None:
        x, maps, proxied = grid
        up = lambda t: nn.functional.interpolate(t, scale_factor=4, mode="nearest")  # noqa: E731
        path = os.path.join(out, "proxy_grid.png")
        pa.viz.save_proxy_grid(path, up(x), maps, up(proxied))
        written.append(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for arm in ("baseline", "proxy"):
        curves = torch.tensor([r["test_acc_curve"] for r in runs if r["arm"] == arm]) * 100
        if not len(curves):
            continue
        epochs = torch.arange(1, curves.shape[1] + 1)
        mean = curves.mean(0)
        lo, hi = curves.min(0).values, curves.max(0).values
        ax.plot(epochs, mean, label=f"{arm} (mean of {len(curves)} seeds)")
        ax.fill_between(epochs, lo, hi, alpha=0.25)
    for e in pa.ProxySchedule.parse(args.schedule).refresh_epochs:
        ax.axvline(e + 1, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="epoch (dotted: refresh after it)", ylabel="test accuracy (%)", title="Digits, small CNN: band = min..max over seeds")
    ax.set_ylim(max(0, float(min(ax.get_ylim()[0], 90))), 100)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = os.path.join(out, "accuracy.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    return written


def markdown_report(results: Dict[str, Any], argv: List[str] | None) -> str:
    """The demo's results as markdown, generated from ``results`` (never typed by hand)."""
    env, cfg = results["environment"], results["config"]
    args = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m benchmarks.demo", *args])
    lines = [
        f"Generated by `{command}` from its `results.json`, at commit `{env['commit']}`.",
        "",
        f"Machine: {env['machine']}, {env['cpu_count']} cores, {env['torch_threads']} torch threads, {env['device']}; "
        f"Python {env['python']}, torch {env['torch']}, proxyaug {env['proxyaug']}.",
        "",
        f"Data: scikit-learn digits, {results['train_size']} train / {results['test_size']} test images (one fixed "
        f"stratified split), upsampled to {cfg['size']}x{cfg['size']}. Schedule `{cfg['schedule']}` "
        f"({results['runs'][0]['epochs']} epochs for both arms); proxy arm: {cfg['method']}, mode {cfg['mode']}, "
        f"threshold {cfg['threshold']}, weight {cfg['weight']}, fraction {cfg['fraction']}. Seeds {cfg['seeds']}.",
        "",
        "| arm | seeds | test accuracy, mean ± sd (%) | min .. max (%) | wall time per run (s) |",
        "|---|---|---|---|---|",
    ]
    for arm, s in results["summary"].items():
        a = s["test_acc"]
        lines.append(f"| {arm} | {a['n']} | {100 * a['mean']:.2f} ± {100 * a['std']:.2f} | {100 * a['min']:.2f} .. {100 * a['max']:.2f} | {s['wall_s']['mean']:.1f} |")
    d = results["paired_difference_proxy_minus_baseline"]
    lines += [
        "",
        f"Paired difference, proxy minus baseline (same seed = same initial weights and batch order): "
        f"{100 * d['mean']:+.2f} percentage points, 95 % t-interval {100 * d['ci95_low']:+.2f} .. {100 * d['ci95_high']:+.2f} "
        f"over {d['n']} seeds.",
        "",
        "Refreshes of the proxy arm (epoch: wrong of scanned -> maps written, seconds):",
        "",
    ]
    for r in results["runs"]:
        if r["arm"] == "proxy":
            steps = "; ".join(f"after epoch {f['epoch']}: {f['wrong']} of {f['scanned']} -> {f['written']}, {f['seconds']:.2f} s" for f in r["refreshes"])
            lines.append(f"- seed {r['seed']}: {steps}; refresh share of wall time {r['refresh_s'] / r['wall_s']:.1%}")
    lines.append(f"\nTotal wall time of the command after setup: {results['total_wall_s']:.0f} s.\n")
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--schedule", default="3,p,4,p,4,p,2", help="thesis notation; both arms train for its total epochs")
    p.add_argument("--method", default="gradcam++")
    p.add_argument("--mode", default="blend")
    p.add_argument("--threshold", type=float, default=0.85)
    p.add_argument("--weight", type=float, default=0.1)
    p.add_argument("--fraction", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=32, help="digits are upsampled from 8x8 to this size")
    p.add_argument("--grid", type=int, default=8, help="samples in proxy_grid.png")
    p.add_argument("--observe", action="store_true", help="record training mistakes; refresh scans only those")
    p.add_argument("--device", default="cpu", help="where to train, e.g. cuda")
    p.add_argument("--out", default="runs/demo")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    train, test = load_digits_split(size=args.size)
    print(f"digits: {len(train)} train / {len(test)} test images, {args.size}x{args.size}; schedule {args.schedule!r}; seeds {args.seeds}")
    start = time.perf_counter()
    runs = [train_run(arm, s, args, train, test, print) for s in args.seeds for arm in ("baseline", "proxy")]
    pictures = save_pictures(args.out, runs, args)

    by_arm = {arm: [r for r in runs if r["arm"] == arm] for arm in ("baseline", "proxy")}
    summary = {arm: {"test_acc": summarize([r["test_acc"] for r in rs]), "wall_s": summarize([r["wall_s"] for r in rs])} for arm, rs in by_arm.items()}
    paired = paired_difference([r["test_acc"] for r in by_arm["proxy"]], [r["test_acc"] for r in by_arm["baseline"]])
    results = {
        "config": vars(args), "environment": environment(args.device), "train_size": len(train), "test_size": len(test),
        "summary": summary, "paired_difference_proxy_minus_baseline": paired,
        "runs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs],
        "total_wall_s": time.perf_counter() - start,
    }
    path = os.path.join(args.out, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)

    report_path = os.path.join(args.out, "report.md")
    with open(report_path, "w") as f:
        f.write(markdown_report(results, argv))

    print()
    print(f"{'arm':10s} {'seeds':>5s}  {'test acc mean ± sd (%)':>24s}  {'min .. max (%)':>16s}  {'wall s/run':>10s}")
    for arm, s in summary.items():
        a = s["test_acc"]
        print(f"{arm:10s} {a['n']:5d}  {100 * a['mean']:15.2f} ± {100 * a['std']:5.2f}  {100 * a['min']:7.2f} .. {100 * a['max']:5.2f}  {s['wall_s']['mean']:10.1f}")
    print(
        f"paired difference proxy - baseline: {100 * paired['mean']:+.2f} pp "
        f"(95% CI {100 * paired['ci95_low']:+.2f} .. {100 * paired['ci95_high']:+.2f}, {paired['n']} seeds)"
    )
    maps = [r["maps_in_bank"] for r in by_arm["proxy"]]
    print(f"maps in the bank at the end (per proxy run): {maps}; refresh time share of proxy wall time: "
          f"{sum(r['refresh_s'] for r in by_arm['proxy']) / sum(r['wall_s'] for r in by_arm['proxy']):.1%}")
    print("wrote " + ", ".join([path, report_path, *pictures]) + f" in {results['total_wall_s']:.0f} s")
    return results


if __name__ == "__main__":
    main()
