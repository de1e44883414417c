"""Speed of proxyaug against plain inference, pytorch-grad-cam, a training step and the thesis.

Every comparison is measured side by side in one process, on the same model, batch and layer:

1. ``maps``: map throughput (images/s) of a plain forward pass under ``no_grad`` (the floor),
   proxyaug per native method, and pytorch-grad-cam's same method; ratios and peak memory.
2. ``transform``: ``ProxyTransform`` (each mode) against one training step of ResNet-18 on the
   same batch.
3. ``e2e``: a short training run with the thesis schedule against the same run without proxy.
4. ``thesis``: time to make about 1.2k Grad-CAM++ maps (the thesis reports ~9 s, and as long
   again to write the proxy images to disk).
5. ``bank``: bytes per image, and what that means for ImageNet-1k.

Method (``benchmarks/README.md``): warm-up runs, then ``repeats`` rounds in which every compared
callable is timed once in steady state (right after an untimed call of itself), in an order
rotated each round so that drift of the machine weighs on all alike, the device synchronised
inside the timed region; the median and the spread (min..max) are reported; fixed
seeds; the machine, versions and commit go into the JSON. Run:

    python -m benchmarks.speed --preset cpu     # a few minutes on 2 CPU cores
    python -m benchmarks.speed --preset gpu     # on a CUDA machine

It writes ``benchmarks/results/speed-<preset>.json`` and a markdown table generated from it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

import proxyaug as pa

PRESETS: Dict[str, Dict[str, Any]] = {
    "cpu": {
        "device": "cpu", "size": 224, "batch": 8, "warmup": 1, "repeats": 5,
        "models": ["resnet18", "resnet50", "efficientnet_b0", "vit_tiny_patch16_224"],
        "methods": ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "eigengradcam"],
        "methods_large": ["gradcam", "gradcam++", "eigencam"],  # for every model after the first
        "transform_batch": 32, "thesis_images": 1200, "thesis_batch": 64,
        "e2e_schedule": "3,p,4,p,4,p,2", "e2e_seeds": [0, 1],
    },
    "gpu": {
        "device": "cuda", "size": 224, "batch": 64, "warmup": 3, "repeats": 10,
        "models": ["resnet18", "resnet50", "efficientnet_b0", "vit_base_patch16_224"],
        "methods": ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "eigengradcam"],
        "transform_batch": 256, "thesis_images": 1200, "thesis_batch": 128,
        "e2e_schedule": "3,p,4,p,4,p,2", "e2e_seeds": [0, 1, 2],
    },
    # seconds: for the test suite, proves the script runs end to end
    "smoke": {
        "device": "cpu", "size": 64, "batch": 2, "warmup": 0, "repeats": 1,
        "models": ["resnet18"], "methods": ["gradcam", "eigencam"],
        "transform_batch": 2, "thesis_images": 8, "thesis_batch": 4,
        "e2e_schedule": "1,p,1", "e2e_seeds": [0],
    },
}

PGC_CLASSES = {
    "gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "hirescam": "HiResCAM",
    "layercam": "LayerCAM", "gradcamelementwise": "GradCAMElementWise", "eigencam": "EigenCAM", "eigengradcam": "EigenGradCAM",
}

TARGETS = {
    "maps_vs_forward": 0.85,  # gradient methods: >= 0.85x plain-forward throughput
    "maps_vs_pgc_cpu": 3.0,  # >= 3x pytorch-grad-cam on CPU
    "maps_vs_pgc_gpu": 10.0,  # >= 10x on a GPU
    "transform_share_cpu": 0.03,  # ProxyTransform <= 3% of a training step on CPU
    "transform_share_gpu": 0.01,  # <= 1% on a GPU
    "e2e_ratio": 1.03,  # thesis schedule end to end <= 1.03x the baseline
}


# -- measuring ---------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_interleaved(fns: Dict[str, Callable[[], Any]], device: torch.device, warmup: int, repeats: int) -> Dict[str, Dict[str, Any]]:
    """Time several callables side by side, in steady state.

    ``repeats`` rounds; each runs every callable once, in an order rotated from round to round,
    and each timed call directly follows an untimed call of the same callable. A callable timed
    right after a different one pays for that one's memory churn (on the CPU, re-faulting pages
    the allocator gave back): a ResNet-18 forward pass timed right after a pytorch-grad-cam call
    measured slower than proxyaug's map computation that contains it. Steady state is also what
    a refresh sees, batch after batch.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    keys = list(fns)
    times: Dict[str, List[float]] = {k: [] for k in keys}
    for r in range(repeats):
        for key in keys[r % len(keys):] + keys[: r % len(keys)]:
            fns[key]()
            _sync(device)
            start = time.perf_counter()
            fns[key]()
            _sync(device)
            times[key].append(time.perf_counter() - start)
    return {k: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "repeats": repeats, "peak_mem_bytes": None}
            for k, t in times.items()}


def measure(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> Dict[str, Any]:
    """Median and spread of ``repeats`` timed calls of ``fn`` after ``warmup`` calls, with peak memory."""
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else None
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats, "peak_mem_bytes": peak}


def environment(device: torch.device) -> Dict[str, Any]:
    import importlib.metadata as md

    def version(name: str) -> Optional[str]:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    from .env import cpu_model as _cpu_model, git_commit

    commit = git_commit()
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU: {_cpu_model()}",
        "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "commit": commit,
        "versions": {n: version(n) for n in ("torch", "torchvision", "timm", "kornia", "grad-cam", "proxyaug")},
    }


# -- cases --------------------------------------------------------------------------------------
def case_maps(cfg: Dict[str, Any], device: torch.device, log: Callable[[str], None]) -> List[Dict[str, Any]]:
    import pytorch_grad_cam as pgc
    import timm
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    rows = []
    size, batch = cfg["size"], cfg["batch"]
    for n, name in enumerate(cfg["models"]):
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=1000, img_size=size) if "vit" in name else timm.create_model(name, num_classes=1000)
        model = model.to(device).eval()
        x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        (layer,) = pa.attention.resolve_layers(model, None, x)
        classes = (torch.arange(batch) % 1000).to(device)
        targets = [ClassifierOutputTarget(int(t)) for t in classes.tolist()]

        def forward() -> None:
            with torch.no_grad():
                model(x)

        def ours(method: str) -> Callable[[], Any]:
            return lambda: pa.attention_maps(model, x, method=method, layer=layer.module, target=classes, size=(size, size))

        def theirs(method: str) -> Callable[[], Any]:
            cls = getattr(pgc, PGC_CLASSES[method])

            def run() -> None:  # as its README uses it: a `with` block per batch
                with cls(model, [layer.module], reshape_transform=lambda t: layer.to_nchw(t, (size, size))) as cam:
                    cam(x, targets)

            return run

        methods = cfg["methods"] if n == 0 else cfg.get("methods_large", cfg["methods"])
        fns: Dict[str, Callable[[], Any]] = {"forward": forward}
        for method in methods:
            fns[f"ours:{method}"], fns[f"theirs:{method}"] = ours(method), theirs(method)
        timed = measure_interleaved(fns, device, cfg["warmup"], cfg["repeats"])
        if device.type == "cuda":  # peak memory, one call each, apart from the timing
            for key, fn in fns.items():
                timed[key]["peak_mem_bytes"] = measure(fn, device, 0, 1)["peak_mem_bytes"]
        model.eval()
        floor = timed["forward"]
        log(f"  {name}: forward {batch / floor['median_s']:.1f} images/s")
        for method in methods:
            a, b = timed[f"ours:{method}"], timed[f"theirs:{method}"]
            row = {
                "model": name, "method": method, "batch": batch, "size": size, "layer": layer.name,
                "forward": floor, "proxyaug": a, "pytorch_grad_cam": b,
                "forward_images_per_s": batch / floor["median_s"], "proxyaug_images_per_s": batch / a["median_s"],
                "pgc_images_per_s": batch / b["median_s"],
                "proxyaug_vs_forward": floor["median_s"] / a["median_s"],
                "proxyaug_vs_pgc": b["median_s"] / a["median_s"],
            }
            rows.append(row)
            log(f"    {method:14s} proxyaug {row['proxyaug_images_per_s']:7.1f}/s ({row['proxyaug_vs_forward']:.2f}x forward)  "
                f"pytorch-grad-cam {row['pgc_images_per_s']:7.1f}/s  -> {row['proxyaug_vs_pgc']:.1f}x")
        del model
        gc.collect()
    return rows


def case_transform(cfg: Dict[str, Any], device: torch.device, log: Callable[[str], None]) -> Dict[str, Any]:
    import timm

    batch, size = cfg["transform_batch"], cfg["size"]
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=1000).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    y = (torch.arange(batch) % 1000).to(device)
    idx = torch.arange(batch)
    bank = pa.MaskBank(batch, resolution=(7, 7), device=device)
    bank.put(idx, torch.rand(batch, 7, 7, generator=torch.Generator().manual_seed(2)).to(device))

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    fns: Dict[str, Callable[[], Any]] = {"train_step": step}
    for mode in pa.functional.MODES:
        proxy = pa.ProxyTransform(bank, mode=mode)
        fns[mode] = (lambda p: lambda: p(x, idx))(proxy)
    timed = measure_interleaved(fns, device, cfg["warmup"] + 1, cfg["repeats"])
    train = timed["train_step"]
    out = {"batch": batch, "size": size, "train_step": train, "modes": {}}
    log(f"  resnet18 training step, batch {batch}: {1000 * train['median_s']:.1f} ms")
    for mode in pa.functional.MODES:
        share = timed[mode]["median_s"] / train["median_s"]
        out["modes"][mode] = {"transform": timed[mode], "share_of_train_step": share}
        log(f"    {mode:6s} {1000 * timed[mode]['median_s']:8.2f} ms = {100 * share:.2f}% of a training step")
    return out


def case_e2e(cfg: Dict[str, Any], device: torch.device, log: Callable[[str], None]) -> Dict[str, Any]:
    from .data import load_data
    from .train import Study, arm_settings, train_run

    study = Study(schedule=cfg["e2e_schedule"], device=str(device), grids=0, size=32)
    data = load_data("digits", size=32)
    arms = {
        "baseline": {"name": "baseline", "kind": "none"},
        "proxy": {"name": "proxy", "kind": "proxy"},
        "proxy_observe": {"name": "proxy_observe", "kind": "proxy", "observe": True},
    }
    runs: Dict[str, List[Dict[str, Any]]] = {arm: [] for arm in arms}
    for seed in cfg["e2e_seeds"]:
        for arm, spec in arms.items():
            r = train_run(study, data, "cnn", arm_settings(spec, study), seed, log=lambda _: None)
            runs[arm].append({"seed": seed, "wall_s": r["wall_s"], "refresh_s": r["refresh_s"], "test_acc": r["test_acc"]})
            log(f"  {arm:14s} seed {seed}: {r['wall_s']:.1f} s (refresh {r['refresh_s']:.2f} s)")
    base = statistics.median(r["wall_s"] for r in runs["baseline"])
    out = {"data": f"digits ({r['train_size']} training images, 32x32) and the study's small CNN, on {device.type}",
           "schedule": cfg["e2e_schedule"], "runs": runs}
    for arm in ("proxy", "proxy_observe"):
        wall = statistics.median(r["wall_s"] for r in runs[arm])
        out[arm] = {"wall_ratio": wall / base, "refresh_share": statistics.median(r["refresh_s"] / r["wall_s"] for r in runs[arm])}
        log(f"    {arm}: {out[arm]['wall_ratio']:.3f}x the baseline's wall time, refresh {100 * out[arm]['refresh_share']:.1f}% of it")
    return out


def case_thesis(cfg: Dict[str, Any], device: torch.device, log: Callable[[str], None]) -> Dict[str, Any]:
    import timm
    from torch.utils.data import TensorDataset

    n, size = cfg["thesis_images"], cfg["size"]
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10).to(device).eval()
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        pred = torch.cat([model(b.to(device)).argmax(1).cpu() for b in images.split(cfg["thesis_batch"])])
    ds = pa.ProxyDataset(TensorDataset(images, (pred + 1) % 10), device=device)  # every image predicted wrongly

    def maps_only() -> None:
        for b in images.split(cfg["thesis_batch"]):
            pa.attention_maps(model, b.to(device), method="gradcam++")

    def full_refresh() -> None:
        ds.refresh(model, method="gradcam++", fraction=1.0, batch_size=cfg["thesis_batch"], seed=0, progress=False)

    attention = measure(maps_only, device, 0, 1)
    refresh = measure(full_refresh, device, 0, 1)
    log(f"  {n} Grad-CAM++ maps (resnet18, {size} px): {attention['median_s']:.1f} s; full refresh (scan + maps + bank): {refresh['median_s']:.1f} s")
    return {"images": n, "size": size, "model": "resnet18", "maps_s": attention["median_s"], "refresh_s": refresh["median_s"],
            "thesis_maps_s": 9.0, "thesis_save_s": 9.0, "written": ds.last_report.written}


def case_bank(cfg: Dict[str, Any], device: torch.device, log: Callable[[str], None]) -> Dict[str, Any]:
    out = {}
    for res in ((7, 7), (14, 14)):
        bank = pa.MaskBank(1000, resolution=res, device=device)
        per_image = sum(b.numel() * b.element_size() for b in bank.buffers()) / len(bank)
        out[f"{res[0]}x{res[1]}"] = {"bytes_per_image": per_image, "imagenet_1k_mb": per_image * 1_281_167 / 1e6}
        log(f"  {res[0]}x{res[1]}: {per_image:.0f} bytes per image; ImageNet-1k (1,281,167 images): {per_image * 1_281_167 / 1e6:.0f} MB")
    return out


CASES = {"maps": case_maps, "transform": case_transform, "e2e": case_e2e, "thesis": case_thesis, "bank": case_bank}


# -- verdicts and the table ----------------------------------------------------------------------
def _limit(kind: str, gpu: bool, row: Optional[Dict[str, Any]] = None) -> str:
    """What limits a missed target (shown in the table)."""
    method = (row or {}).get("method")
    if kind == "vs_pgc" and method == "eigencam":
        return ("pytorch-grad-cam's EigenCAM needs no backward pass either: both cost one forward pass plus a "
                "small decomposition, so only its host copies and per-image SVD can be saved")
    if kind == "vs_pgc":
        return ("on the CPU pytorch-grad-cam costs a forward pass plus a full backward pass (about two more); "
                "skipping that backward bounds the gain near 3x" if not gpu else "see the per-model row")
    if kind == "vs_forward":
        return ("the backward pass from the logits to the target layer and the map's own arithmetic "
                "(for EigenCAM a float64 eigen-decomposition per image) are not hidden behind the forward pass")
    if kind == "transform":
        return ("the blur is a depthwise convolution with a 2*ceil(3*sigma)+1-tap kernel (43 taps at 224 px), "
                "slow on a 2-core CPU; pass a smaller blur_sigma, or use the GPU")
    if kind == "e2e":
        return ("every refresh predicts the whole training set once more; with observe() a refresh scans only "
                "the mistakes recorded during training")
    return ""


def verdicts(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each target with the measured value, whether it was met and, if not, what limits it."""
    gpu = results["settings"]["device"] == "cuda"
    out = []
    cases = results["cases"]

    def add(target: str, value: float, met: bool, kind: str, row: Optional[Dict[str, Any]] = None) -> None:
        out.append({"target": target, "value": value, "met": met, "limited_by": "" if met else _limit(kind, gpu, row)})

    for row in cases.get("maps", []):
        name = f"{row['model']} {row['method']}"
        v = row["proxyaug_vs_forward"]
        add(f"{name}: >= {TARGETS['maps_vs_forward']}x forward", v, v >= TARGETS["maps_vs_forward"], "vs_forward", row)
        key = "maps_vs_pgc_gpu" if gpu else "maps_vs_pgc_cpu"
        v = row["proxyaug_vs_pgc"]
        add(f"{name}: >= {TARGETS[key]:g}x pytorch-grad-cam", v, v >= TARGETS[key], "vs_pgc", row)
    if "transform" in cases:
        key = "transform_share_gpu" if gpu else "transform_share_cpu"
        for mode, m in cases["transform"]["modes"].items():
            v = m["share_of_train_step"]
            add(f"transform {mode}: <= {100 * TARGETS[key]:g}% of a resnet18 step", v, v <= TARGETS[key], "transform")
    if "e2e" in cases:
        for arm in ("proxy", "proxy_observe"):
            v = cases["e2e"][arm]["wall_ratio"]
            add(f"end to end ({arm}): <= {TARGETS['e2e_ratio']}x baseline", v, v <= TARGETS["e2e_ratio"], "e2e")
    return out


def render(results: Dict[str, Any]) -> str:
    env, s = results["environment"], results["settings"]
    lines = [
        f"Generated by `{results['command']}` from `{results['json']}` (commit `{env['commit']}`).",
        "",
        f"Device: **{env['device']}**; {env['cpu_count']} CPU cores, {env['torch_threads']} torch threads; Python {env['python']}; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".",
        f"Timing: {s['warmup']} warm-up run(s), median of {s['repeats']} timed runs (min..max in the JSON), device synchronised inside the timed region.",
        "",
    ]
    cases = results["cases"]
    if "maps" in cases:
        lines += [
            f"### Map throughput ({s['size']} px, batch {s['batch']}, maps at full size as pytorch-grad-cam returns them)",
            "",
            "| model | method | forward (img/s) | proxyaug (img/s) | pytorch-grad-cam (img/s) | proxyaug / forward | proxyaug / pytorch-grad-cam | peak mem proxyaug / pgc (MB) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in cases["maps"]:
            mem = "n/a (CPU)"
            if r["proxyaug"]["peak_mem_bytes"] is not None:
                mem = f"{r['proxyaug']['peak_mem_bytes'] / 2**20:.0f} / {r['pytorch_grad_cam']['peak_mem_bytes'] / 2**20:.0f}"
            lines.append(
                f"| {r['model']} | {r['method']} | {r['forward_images_per_s']:.1f} | {r['proxyaug_images_per_s']:.1f} | "
                f"{r['pgc_images_per_s']:.1f} | {r['proxyaug_vs_forward']:.2f}x | {r['proxyaug_vs_pgc']:.1f}x | {mem} |"
            )
        lines.append("")
    if "transform" in cases:
        t = cases["transform"]
        lines += [f"### ProxyTransform against a resnet18 training step (batch {t['batch']}, {t['size']} px)", "",
                  f"Training step (forward, backward, SGD): {1000 * t['train_step']['median_s']:.1f} ms.", "",
                  "| mode | transform (ms) | share of a training step |", "|---|---|---|"]
        for mode, m in t["modes"].items():
            lines.append(f"| {mode} | {1000 * m['transform']['median_s']:.2f} | {100 * m['share_of_train_step']:.2f}% |")
        lines.append("")
    if "e2e" in cases:
        e = cases["e2e"]
        lines += [f"### End to end: schedule `{e['schedule']}` on {e['data']}", "",
                  "| run | wall time vs baseline | refresh share of wall time |", "|---|---|---|"]
        for arm, label in (("proxy", "Proxy Attention, full scan at each refresh"), ("proxy_observe", "Proxy Attention, scanning only observed mistakes")):
            lines.append(f"| {label} | {e[arm]['wall_ratio']:.3f}x | {100 * e[arm]['refresh_share']:.1f}% |")
        lines.append("")
    if "thesis" in cases:
        t = cases["thesis"]
        lines += [f"### The thesis' figure: {t['images']} Grad-CAM++ maps ({t['model']}, {t['size']} px)", "",
                  f"proxyaug: {t['maps_s']:.1f} s for the maps alone, {t['refresh_s']:.1f} s for a whole refresh (scan, maps, bank), "
                  f"nothing written to disk. The thesis: about {t['thesis_maps_s']:.0f} s for the maps and as long again to save "
                  "the proxy images (its hardware is not stated; compare within a device only).", ""]
    if "bank" in cases:
        lines += ["### Bank memory (float16 maps + 1 presence byte)", "", "| map | bytes per image | ImageNet-1k (1,281,167 images) |", "|---|---|---|"]
        for res, b in cases["bank"].items():
            lines.append(f"| {res} | {b['bytes_per_image']:.0f} | {b['imagenet_1k_mb']:.0f} MB |")
        lines.append("")
    lines += ["### Targets", "", "| target | measured | met | limited by |", "|---|---|---|---|"]
    for v in results["verdicts"]:
        value = f"{100 * v['value']:.2f}%" if "%" in v["target"] else f"{v['value']:.2f}x"
        lines.append(f"| {v['target']} | {value} | {'yes' if v['met'] else '**no**'} | {v['limited_by']} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--render", metavar="JSON", help="only print the markdown table of an earlier result file")
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
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(wanted) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown case(s) {sorted(unknown)}; expected some of {list(CASES)}")
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, f"speed-{args.preset}.json")
    results: Dict[str, Any] = {
        "preset": args.preset, "settings": cfg, "environment": environment(device),
        "command": " ".join(["python -m benchmarks.speed", *(sys.argv[1:] if argv is None else argv)]),
        "json": json_path, "cases": {},
    }
    print(f"proxyaug speed benchmark, preset {args.preset!r} on {results['environment']['device']}")
    for name in wanted:
        print(f"[{name}]")
        start = time.perf_counter()
        results["cases"][name] = CASES[name](cfg, device, print)
        print(f"  ({time.perf_counter() - start:.0f} s)")
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


if __name__ == "__main__":
    main()
