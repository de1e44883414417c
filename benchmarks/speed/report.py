"""The speed benchmark's verdicts (each target: measured, met, what limits it) and its markdown
table, generated from the results JSON."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .formats import render_formats
from .guided import render_guided
from .transformer import render_transformer
from .peers import PEERS

PEER_LABELS = {key: label for key, label, _ in PEERS}

TARGETS = {
    "maps_vs_forward": 0.85,  # gradient methods: >= 0.85x plain-forward throughput
    "maps_vs_forward_gpu": 0.95,  # >= 0.95x on a GPU (issue 17)
    "maps_vs_fastest_peer_gpu": 2.0,  # >= 2x the fastest of pytorch-grad-cam, torchcam and captum on a GPU (issue 17)
    "maps_vs_pgc_cpu": 3.0,  # >= 3x pytorch-grad-cam on CPU
    "maps_vs_pgc_gpu": 10.0,  # >= 10x on a GPU
    "transform_share_cpu": 0.03,  # ProxyTransform <= 3% of a training step on CPU
    "transform_share_gpu": 0.01,  # <= 1% on a GPU
    "e2e_ratio": 1.03,  # thesis schedule end to end <= 1.03x the baseline
    "metrics_vs_reference": 10.0,  # batched explanation metrics >= 10x the per-image references
}


def _limit(kind: str, gpu: bool, row: Optional[Dict[str, Any]] = None) -> str:
    """What limits a missed target (shown in the table)."""
    method = (row or {}).get("method")
    if kind == "vs_pgc" and method == "eigencam":
        return ("pytorch-grad-cam's EigenCAM needs no backward pass either: both cost one forward pass plus a "
                "small decomposition, so only its host copies and per-image SVD can be saved")
    if kind == "vs_pgc":
        return ("on the CPU pytorch-grad-cam costs a forward pass plus a full backward pass (about two more); "
                "skipping that backward bounds the gain near 3x" if not gpu else "see the per-model row")
    if kind == "vs_peer":
        return ("torchcam and captum take gradients only down to the target layer as well (torch.autograd.grad), so "
                "what is left to save is their forward pass with autograd on every layer and their per-call hooks")
    if kind == "vs_forward":
        return ("the backward pass from the logits to the target layer and the map's own arithmetic "
                "(for EigenCAM a float64 eigen-decomposition per image) are not hidden behind the forward pass")
    if kind == "transform":
        return ("the blur is a depthwise convolution with a 2*ceil(3*sigma)+1-tap kernel (43 taps at 224 px), "
                "slow on a 2-core CPU; pass a smaller blur_sigma, or use the GPU")
    if kind == "metrics":
        ref = (row or {}).get("reference", "")
        if "DeletionInsertion" in ref:
            return ("torchcam 0.5 is batched in torch as well (32 perturbed images per forward): proxyaug runs 2(K+1) "
                    "forwards of the batch, torchcam 2K+1 batches' worth of images, and those forwards are nearly all the time on the CPU")
        if "torchcam" in ref:
            return ("torchcam 0.5 is batched in torch as well: both run the same two ResNet-18 forwards, nearly all "
                    "the time on the CPU")
        if "ROAD" in ref:
            return "ROAD's per-image sparse solves are its cost; proxyaug's deletion curve is still model forwards"
        return ("pytorch-grad-cam's confidence change is two batched forwards too; its per-image loop and numpy "
                "copies are small next to them on the CPU")
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
        v, key = row["proxyaug_vs_forward"], "maps_vs_forward_gpu" if gpu else "maps_vs_forward"
        add(f"{name}: >= {TARGETS[key]}x forward", v, v >= TARGETS[key], "vs_forward", row)
        if "proxyaug_vs_pgc" in row:
            key = "maps_vs_pgc_gpu" if gpu else "maps_vs_pgc_cpu"
            v = row["proxyaug_vs_pgc"]
            add(f"{name}: >= {TARGETS[key]:g}x pytorch-grad-cam", v, v >= TARGETS[key], "vs_pgc", row)
        if gpu and row.get("fastest_peer"):
            v, label = row["proxyaug_vs_fastest_peer"], PEER_LABELS[row["fastest_peer"]]
            add(f"{name}: >= {TARGETS['maps_vs_fastest_peer_gpu']:g}x the fastest peer ({label})", v,
                v >= TARGETS["maps_vs_fastest_peer_gpu"], "vs_peer", row)
    if "transform" in cases:
        key = "transform_share_gpu" if gpu else "transform_share_cpu"
        for mode, m in cases["transform"]["modes"].items():
            v = m["share_of_train_step"]
            add(f"transform {mode}: <= {100 * TARGETS[key]:g}% of a resnet18 step", v, v <= TARGETS[key], "transform")
    if "e2e" in cases:
        for arm in ("proxy", "proxy_observe"):
            v = cases["e2e"][arm]["wall_ratio"]
            add(f"end to end ({arm}): <= {TARGETS['e2e_ratio']}x baseline", v, v <= TARGETS["e2e_ratio"], "e2e")
    if "metrics" in cases:
        for row in cases["metrics"]["rows"]:
            v = row["ratio"]
            note = " (not the same work)" if "ROAD" in row["reference"] else ""
            add(f"metrics {row['metric']}: >= {TARGETS['metrics_vs_reference']:g}x {row['reference']}{note}", v,
                v >= TARGETS["metrics_vs_reference"], "metrics", row)
    return out


def _peers(row: Dict[str, Any]) -> Dict[str, Any]:
    """A maps row's peers; rows written before torchcam and captum joined hold pytorch-grad-cam only."""
    if "peers" in row:
        return row["peers"]
    return {"pytorch_grad_cam": {"timing": row["pytorch_grad_cam"], "images_per_s": row["pgc_images_per_s"],
                                 "proxyaug_vs": row["proxyaug_vs_pgc"], "agreement": None, "note": ""}}


def _render_maps(rows: List[Dict[str, Any]], s: Dict[str, Any]) -> List[str]:
    present = [key for key, _, _ in PEERS if any(key in _peers(r) for r in rows)]
    head = " | ".join(f"{PEER_LABELS[p]} (img/s; proxyaug's gain)" for p in present)
    lines = [f"### Map throughput ({s['size']} px, batch {s['batch']}, full-size maps from every library)", "",
             f"| model | method | forward (img/s) | proxyaug (img/s) | proxyaug / forward | {head} | peak mem proxyaug / pgc (MB) |",
             "|---|---|---|---|---|" + "---|" * len(present) + "---|"]
    for r in rows:
        peers, cells = _peers(r), []
        for p in present:
            missing = p in r.get("missing_peers", [])
            cells.append(f"{peers[p]['images_per_s']:.1f} ({peers[p]['proxyaug_vs']:.1f}x)" if p in peers else ("not installed" if missing else "n/a"))
        mem = "n/a (CPU)"
        if r["proxyaug"]["peak_mem_bytes"] is not None and "pytorch_grad_cam" in peers:
            mem = f"{r['proxyaug']['peak_mem_bytes'] / 2**20:.0f} / {peers['pytorch_grad_cam']['timing']['peak_mem_bytes'] / 2**20:.0f}"
        lines.append(f"| {r['model']} | {r['method']} | {r['forward_images_per_s']:.1f} | {r['proxyaug_images_per_s']:.1f} | "
                     f"{r['proxyaug_vs_forward']:.2f}x | " + " | ".join(cells) + f" | {mem} |")
    lines.append("")
    agree = [(r, p, v) for r in rows for p, v in _peers(r).items() if v.get("agreement")]
    if agree:
        lines += ["#### Agreement with proxyaug's maps", "",
                  "Each peer's full-size maps against proxyaug's for the same images, layer and classes, both min-max "
                  "normalised per image; n/a: the peer has no such method (captum has Grad-CAM only, and no reshape "
                  "for a ViT's tokens; torchcam has no HiResCAM or Eigen-CAMs).", "",
                  "| model | method | peer | max abs difference | mean abs difference | why they differ |", "|---|---|---|---|---|---|"]
        for r, p, v in agree:
            a = v["agreement"]
            lines.append(f"| {r['model']} | {r['method']} | {PEER_LABELS[p]} | {a['max_abs_diff']:.2g} | {a['mean_abs_diff']:.2g} | {v['note']} |")
        lines.append("")
    return lines


def _render_metrics(m: Dict[str, Any], run: Optional[Dict[str, Any]]) -> List[str]:
    lines = [f"### Explanation metrics against per-image references ({m['model']}, {m['size']} px, batch {m['batch']}, "
             f"{m['maps']} maps, {m['steps']} steps)", ""]
    if run:
        env = run["environment"]
        lines += [f"Measured by `{run['command']}` (merged into this file) at commit `{env['commit']}` on {env['device']}, "
                  f"{env['cpu_count']} CPU cores; torchcam {m['torchcam']}. {m['warmup']} warm-up run(s), median of {m['repeats']} "
                  f"timed runs; ROAD {m['road_repeats']} timed run (seconds per image).", ""]
    lines += ["| metric | reference | proxyaug (ms) | reference (ms) | reference / proxyaug | what both compute |", "|---|---|---|---|---|---|"]
    for r in m["rows"]:
        lines.append(f"| {r['metric']} | {r['reference']} | {r['proxyaug_ms']:.1f} | {r['reference_ms']:.1f} | {r['ratio']:.2f}x | {r['compares']} |")
    v = m["values"]
    lines += ["", f"Same values on these images: deletion AUC {v['deletion_auc']:.6f} (torchcam {v['torchcam_deletion_auc']:.6f}), "
              f"insertion AUC {v['insertion_auc']:.6f} (torchcam {v['torchcam_insertion_auc']:.6f}), average drop "
              f"{v['average_drop']:.6f} (torchcam {v['torchcam_average_drop']:.6f}), increase {v['increase']:.3f} "
              f"(torchcam {v['torchcam_increase']:.3f}).", ""]
    return lines


def render(results: Dict[str, Any]) -> str:
    env, s = results["environment"], results["settings"]
    lines = [
        f"Generated by `{results['command']}` from `{results['json']}` (commit `{env['commit']}`).",
        "",
        f"Device: **{env['device']}**; {env['cpu_count']} CPU cores, {env['torch_threads']} torch threads; Python {env['python']}; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".",
        f"Timing: {s['warmup']} warm-up run(s), median of {s['repeats']} timed runs (min..max in the JSON), "
        + ("timed with CUDA events after the queue drained." if s["device"] == "cuda" else "device synchronised inside the timed region."),
        "",
    ]
    runs = results.get("case_runs", {})
    if runs:
        groups: Dict[str, List[str]] = {}
        for case, run in runs.items():
            groups.setdefault(run["command"], []).append(case)
        for command, names in groups.items():
            run, cs = runs[names[0]], runs[names[0]].get("settings")
            detail = f" (batch {cs['batch']}, {cs['warmup']} warm-up run(s), median of {cs['repeats']} timed runs)" if cs else ""
            peers = ", ".join(f"{d} {run['environment']['versions'][d]}" for _, _, d in PEERS if run["environment"]["versions"].get(d))
            lines[-1:-1] = [f"Merged into this file: {', '.join(names)}, measured by `{command}` at commit `{run['environment']['commit']}` "
                            f"on {run['environment']['device']}{detail}{'; ' + peers if peers else ''}; the other cases by the command above."]
    load = env.get("load")
    if load:
        per_case = "; ".join(f"{c} {v['before']:.1f} -> {v['after']:.1f}" for c, v in load.get("cases", {}).items())
        lines[-1:-1] = [f"Load average (1 min) of the machine, before -> after each case: {per_case} "
                        f"({env['cpu_count']} cores; other work on the machine shows here)."]
    cases = results["cases"]
    if "maps" in cases:
        lines += _render_maps(cases["maps"], results.get("case_runs", {}).get("maps", {}).get("settings", s))
    if "transform" in cases:
        t = cases["transform"]
        lines += [f"### ProxyTransform against a resnet18 training step (batch {t['batch']}, {t['size']} px)", "",
                  f"Training step (forward, backward, SGD): {1000 * t['train_step']['median_s']:.1f} ms.", "",
                  "| mode | transform (ms) | share of a training step |", "|---|---|---|"]
        for mode, m in t["modes"].items():
            lines.append(f"| {mode} | {1000 * m['transform']['median_s']:.2f} | {100 * m['share_of_train_step']:.2f}% |")
        lines.append("")
        if "blur_alone" in t:  # the blur alone at the default sigma: proxyaug's two paths and Kornia's (0.1's)
            lines += ["The blur alone at the default sigma, in the same run:", "", "| blur | ms | share of a training step |", "|---|---|---|"]
            lines += [f"| {name} | {1000 * b['time']['median_s']:.2f} | {100 * b['share_of_train_step']:.2f}% |" for name, b in t["blur_alone"].items()]
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
    if "formats" in cases:
        lines += render_formats(cases["formats"])
    if "transformer" in cases:
        lines += render_transformer(cases["transformer"])
    if "guided" in cases:
        lines += render_guided(cases["guided"])
    if "metrics" in cases:
        lines += _render_metrics(cases["metrics"], results.get("case_runs", {}).get("metrics"))
    lines += ["### Targets", "", "| target | measured | met | limited by |", "|---|---|---|---|"]
    for v in results["verdicts"]:
        value = f"{100 * v['value']:.2f}%" if "%" in v["target"] else f"{v['value']:.2f}x"
        lines.append(f"| {v['target']} | {value} | {'yes' if v['met'] else '**no**'} | {v['limited_by']} |")
    return "\n".join(lines) + "\n"
