"""The cases of the speed benchmark, one function each: ``case(cfg, device, log) -> result``."""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import statistics
from typing import Any, Callable, Dict, List

import torch
from torch import nn

import proxyaug as pa

from .formats import case_formats
from .guided import case_guided
from .transformer import case_transformer
from .measure import measure, measure_interleaved
from .peers import FORMULA_NOTES, PEERS, PGC_CLASSES, agreement, flipped_maps, missing_for, peer_maps, peers_for

def _model(name: str, size: int, device: torch.device) -> nn.Module:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=1000, img_size=size) if "vit" in name else timm.create_model(name, num_classes=1000)
    return model.to(device).eval()


def _maps_row(name: str, method: str, layer: Any, timed: Dict[str, Any], agree: Dict[str, Any], cfg: Dict[str, Any]) -> Dict[str, Any]:
    batch, floor, a = cfg["batch"], timed["forward"], timed[f"ours:{method}"]
    row: Dict[str, Any] = {
        "model": name, "method": method, "batch": batch, "size": cfg["size"], "layer": layer.name,
        "forward": floor, "proxyaug": a, "forward_images_per_s": batch / floor["median_s"],
        "proxyaug_images_per_s": batch / a["median_s"], "proxyaug_vs_forward": floor["median_s"] / a["median_s"], "peers": {},
        "missing_peers": missing_for(method, layer),
    }
    for peer, _, _ in PEERS:
        b = timed.get(f"{peer}:{method}")
        if b is None:
            continue
        row["peers"][peer] = {"timing": b, "images_per_s": batch / b["median_s"], "proxyaug_vs": b["median_s"] / a["median_s"],
                              "agreement": agree[peer], "note": FORMULA_NOTES.get((peer, method), "")}
    pgc = row["peers"].get("pytorch_grad_cam")
    if pgc:  # the keys of the earlier results, kept for the scale estimate and older readers
        row.update(pytorch_grad_cam=pgc["timing"], pgc_images_per_s=pgc["images_per_s"], proxyaug_vs_pgc=pgc["proxyaug_vs"])
    if row["peers"]:
        fastest = min(row["peers"], key=lambda p: row["peers"][p]["timing"]["median_s"])
        row.update(fastest_peer=fastest, proxyaug_vs_fastest_peer=row["peers"][fastest]["proxyaug_vs"])
    return row


def case_maps(cfg: Dict[str, Any], device: torch.device, log: Callable[[str], None]) -> List[Dict[str, Any]]:
    rows = []
    size, batch = cfg["size"], cfg["batch"]
    for n, name in enumerate(cfg["models"]):
        model = _model(name, size, device)
        x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        (layer,) = pa.attention.resolve_layers(model, None, x)
        classes = (torch.arange(batch) % 1000).to(device)

        def forward() -> None:
            with torch.no_grad():
                model(x)

        def ours(method: str) -> Callable[[], Any]:
            return lambda: pa.attention_maps(model, x, pa.MapSpec(method, layer=layer.module), target=classes, size=(size, size))

        methods = cfg["methods"] if n == 0 else cfg.get("methods_large", cfg["methods"])
        fns: Dict[str, Callable[[], Any]] = {"forward": forward}
        agree: Dict[str, Dict[str, Any]] = {}
        for method in methods:
            fns[f"ours:{method}"] = ours(method)
            reference = fns[f"ours:{method}"]()
            flipped = flipped_maps(fns[f"ours:{method}"]) if method.startswith("eigen") else None
            agree[method] = {}
            for peer in peers_for([method], layer)[method]:
                fns[f"{peer}:{method}"] = peer_maps(peer, method, model, x, layer, classes)
                agree[method][peer] = agreement(reference, fns[f"{peer}:{method}"](), flipped)
        timed = measure_interleaved(fns, device, cfg["warmup"], cfg["repeats"])
        if device.type == "cuda":  # peak memory, one call each, apart from the timing
            for key, fn in fns.items():
                timed[key]["peak_mem_bytes"] = measure(fn, device, 0, 1)["peak_mem_bytes"]
        model.eval()
        log(f"  {name}: forward {batch / timed['forward']['median_s']:.1f} images/s")
        for method in methods:
            rows.append(_maps_row(name, method, layer, timed, agree[method], cfg))
            r = rows[-1]
            peers = "  ".join(f"{p} {v['images_per_s']:.1f}/s ({r['proxyaug_images_per_s'] / v['images_per_s']:.1f}x, "
                              f"max diff {v['agreement']['max_abs_diff']:.2g})" for p, v in r["peers"].items())
            log(f"    {method:14s} proxyaug {r['proxyaug_images_per_s']:7.1f}/s ({r['proxyaug_vs_forward']:.2f}x forward)  {peers}")
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
    fns.update(_blurs(x))
    timed = measure_interleaved(fns, device, cfg["warmup"] + 1, cfg["repeats"])
    train = timed["train_step"]
    out = {"batch": batch, "size": size, "train_step": train, "modes": {}}
    log(f"  resnet18 training step, batch {batch}: {1000 * train['median_s']:.1f} ms")
    for mode in pa.functional.MODES:
        share = timed[mode]["median_s"] / train["median_s"]
        out["modes"][mode] = {"transform": timed[mode], "share_of_train_step": share}
        log(f"    {mode:6s} {1000 * timed[mode]['median_s']:8.2f} ms = {100 * share:.2f}% of a training step")
    out["blur_alone"] = {name: {"time": timed[name], "share_of_train_step": timed[name]["median_s"] / train["median_s"]} for name in _BLURS}
    for name in _BLURS:
        log(f"    {name:22s} {1000 * timed[name]['median_s']:8.2f} ms (the blur alone)")
    return out


# The blur alone at the default sigma, three ways: the default (half resolution from 192 px), the exact
# blur, and Kornia's gaussian_blur2d, which proxyaug 0.1 ran.
_BLURS = ("blur default", "blur exact", "kornia gaussian_blur2d")


def _blurs(x: torch.Tensor) -> Dict[str, Callable[[], Any]]:
    import kornia

    sigma = pa.functional.default_blur_sigma(x.shape[-2:])
    k = 2 * int(math.ceil(3 * sigma)) + 1
    return {
        "blur default": lambda: pa.functional.gaussian_blur(x, sigma),
        "blur exact": lambda: pa.functional.gaussian_blur(x, sigma, exact=True),
        "kornia gaussian_blur2d": lambda: kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect"),
    }


def case_e2e(cfg: Dict[str, Any], device: torch.device, log: Callable[[str], None]) -> Dict[str, Any]:
    from ..data import load_data
    from ..study import Study, arm_settings, train_run

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
            pa.attention_maps(model, b.to(device), pa.MapSpec("gradcam++"))

    def full_refresh() -> None:
        pa.refresh(model, ds, spec=pa.MapSpec("gradcam++"), fraction=1.0, batch_size=cfg["thesis_batch"], seed=0, progress=False)

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


class _GivenCams:
    """A torchcam CAM extractor that returns maps fixed in advance, so that torchcam scores the
    maps proxyaug scores (as in ``tests/test_metrics_fidelity.py``)."""

    def __init__(self, model: nn.Module, maps: torch.Tensor) -> None:
        self.model, self.maps = model, maps

    def __call__(self, class_idx: Any = None, scores: Any = None, normalized: bool = True, **kwargs: Any) -> List[torch.Tensor]:
        return [self.maps]

    @staticmethod
    def fuse_cams(cams: List[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    def _hooks_off(self) -> Any:
        return contextlib.nullcontext()


def _metric_fns(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor, steps: int) -> Dict[str, Callable[[], Any]]:
    """The compared callables: proxyaug's batched metrics, torchcam 0.5's and pytorch-grad-cam's, on the same maps."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric

    softmax = functools.partial(torch.softmax, dim=-1)
    given, idx = _GivenCams(model, maps), classes.tolist()
    full = nn.functional.interpolate(maps.unsqueeze(1), x.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
    full_np = full.cpu().numpy()  # pytorch-grad-cam takes full-size numpy maps, as its CAMs return them
    soft_targets = [ClassifierOutputSoftmaxTarget(c) for c in idx]

    def ours_curves() -> None:
        pa.metrics.deletion_curve(model, x, maps, steps=steps, baseline="zeros", target=classes)
        pa.metrics.insertion_curve(model, x, maps, steps=steps, baseline="zeros", target=classes)

    def torchcam_curves() -> None:  # one update computes both curves
        DeletionInsertionMetric(given, softmax, steps=steps).update(x, class_idx=idx)

    def ours_drop() -> None:
        pa.metrics.average_drop_increase(model, x, maps, target=classes)

    def torchcam_drop() -> None:
        ClassificationMetric(given, softmax).update(x, class_idx=idx)

    def pgc_drop() -> None:  # one call gives o - y per image, from which drop and increase follow
        CamMultImageConfidenceChange()(x, full_np, soft_targets, model)

    return {"ours:curves": ours_curves, "torchcam:curves": torchcam_curves, "ours:drop": ours_drop,
            "torchcam:drop": torchcam_drop, "pgc:drop": pgc_drop}


def _metric_values(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor, steps: int) -> Dict[str, float]:
    """Both sides' values on the benchmark's images (the timed calls compute the same numbers)."""
    from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric

    softmax, given, idx = functools.partial(torch.softmax, dim=-1), _GivenCams(model, maps), classes.tolist()
    ref = DeletionInsertionMetric(given, softmax, steps=steps)
    ref.update(x, class_idx=idx)
    cls = ClassificationMetric(given, softmax)
    cls.update(x, class_idx=idx)
    m = pa.metrics
    drop, inc = m.average_drop_increase(model, x, maps, target=classes)
    return {
        "deletion_auc": float(m.auc(m.deletion_curve(model, x, maps, steps=steps, baseline="zeros", target=classes)).mean()),
        "insertion_auc": float(m.auc(m.insertion_curve(model, x, maps, steps=steps, baseline="zeros", target=classes)).mean()),
        "average_drop": float(drop.mean()), "increase": float(inc.float().mean()),
        "torchcam_deletion_auc": ref.summary()["deletion_auc"], "torchcam_insertion_auc": ref.summary()["insertion_auc"],
        "torchcam_average_drop": cls.summary()["avg_drop"], "torchcam_increase": cls.summary()["conf_increase"],
    }


#: (row name, proxyaug's callable, reference's callable, reference, what both compute)
METRIC_PAIRS = [
    ("deletion + insertion AUC", "ours:curves", "torchcam:curves", "torchcam 0.5 DeletionInsertionMetric",
     "both curves, zeros baseline, same pixel counts per step"),
    ("average drop / increase", "ours:drop", "torchcam:drop", "torchcam 0.5 ClassificationMetric", "the same two quantities"),
    ("average drop / increase", "ours:drop", "pgc:drop", "pytorch-grad-cam CamMultImageConfidenceChange",
     "confidence change o - y per image (drop and increase follow from it; it is not divided by y)"),
    ("deletion AUC vs ROAD (MoRF, 9 percentiles)", "ours:deletion", "pgc:road", "pytorch-grad-cam ROADMostRelevantFirstAverage",
     "not the same work: ROAD imputes removed pixels by a sparse linear solve per image and percentile (scipy) "
     "where deletion uses a fixed baseline; pytorch-grad-cam has no deletion curve"),
]


def case_metrics(cfg: Dict[str, Any], device: torch.device, log: Callable[[str], None]) -> Dict[str, Any]:
    import timm
    from pytorch_grad_cam.metrics.road import ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from ..env import version

    size, batch, steps = cfg["size"], cfg["metrics_batch"], cfg["metrics_steps"]
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=1000).to(device).eval()
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    classes = (torch.arange(batch) % 1000).to(device)
    maps = pa.attention_maps(model, x, pa.MapSpec("gradcam"), target=classes)  # (B, 7, 7) at 224 px; both resize bilinearly
    fns = _metric_fns(model, x, maps, classes, steps)
    timed = measure_interleaved(fns, device, cfg["warmup"], cfg["metrics_repeats"])
    full_np = nn.functional.interpolate(maps.unsqueeze(1), (size, size), mode="bilinear", align_corners=False).squeeze(1).cpu().numpy()
    road = ROADMostRelevantFirstAverage()
    slow = {  # ROAD takes seconds per image: its own group, no warm-up and one timed round
        "ours:deletion": lambda: pa.metrics.deletion_curve(model, x, maps, steps=steps, baseline="zeros", target=classes),
        "pgc:road": lambda: road(x, full_np, [ClassifierOutputSoftmaxTarget(c) for c in classes.tolist()], model),
    }
    timed.update(measure_interleaved(slow, device, 0, 1))
    rows = []
    for metric, ours, ref, reference, what in METRIC_PAIRS:
        a, b = timed[ours], timed[ref]
        rows.append({"metric": metric, "reference": reference, "compares": what, "proxyaug": a, "reference_timing": b,
                     "proxyaug_ms": 1000 * a["median_s"], "reference_ms": 1000 * b["median_s"], "ratio": b["median_s"] / a["median_s"]})
        r = rows[-1]
        log(f"  {metric:42s} proxyaug {r['proxyaug_ms']:9.1f} ms  {reference} {r['reference_ms']:9.1f} ms  -> {r['ratio']:.2f}x")
    values = _metric_values(model, x, maps, classes, steps)
    return {"model": "resnet18", "size": size, "batch": batch, "steps": steps, "maps": f"gradcam {tuple(maps.shape[-2:])}",
            "repeats": cfg["metrics_repeats"], "warmup": cfg["warmup"], "road_repeats": 1, "torchcam": version("torchcam"),
            "rows": rows, "values": values}


CASES = {"maps": case_maps, "transform": case_transform, "e2e": case_e2e, "thesis": case_thesis, "bank": case_bank, "metrics": case_metrics,
         "formats": case_formats, "transformer": case_transformer, "guided": case_guided}
