"""The report's "Explanations" section: explanation metrics per arm, paired differences by seed,
their course over the refresh points, and grids of the same test images per arm.

Comparisons: every arm with the baseline, and every Proxy Attention arm with every control (as
for accuracy), on the metrics of ``COMPARED`` that the runs hold. Differences are in the metric's
own units (energies: shares of the map's mass, written in percentage points).
"""

from __future__ import annotations

import glob
import os
from typing import Any, Dict, List, Optional

import torch

from .arms import arm_kind
from .explain import KEYS
from .stats import describe, paired, verdict
from .text import slug

# (key, label, what a better explanation does) compared between arms
COMPARED = (
    ("eval_cue_energy", "cue energy", "lower: less attention on the spurious cue"),
    ("own_cue_energy", "cue energy, own method", "lower"),
    ("eval_object_energy", "object energy", "higher: more attention on the digit"),
    ("eval_deletion", "deletion AUC", "lower"),
    ("eval_insertion", "insertion AUC", "higher"),
)
SHARES = {"acc", *(k for k in KEYS if k.endswith(("_energy", "_pointing", "_drop", "_increase")))}


def _fmt(key: str, v: float) -> str:
    return f"{100 * v:.1f} %" if key in SHARES else f"{v:.3f}"


def _diff(key: str, d: Dict[str, float]) -> str:
    s = 100 if key in SHARES else 1
    unit, digits = (" pp", 1) if key in SHARES else ("", 3)
    return f"{s * d['mean']:+.{digits}f}{unit} [{s * d['ci95_low']:+.{digits}f}, {s * d['ci95_high']:+.{digits}f}]"


def summarize_explanations(records: List[Dict[str, Any]], summary: Dict[str, Any]) -> Dict[str, Any]:
    """Per group of ``summary`` whose runs measured explanations: each arm's final metrics
    (described over seeds), their mean at each measuring epoch, and the paired comparisons."""
    out: Dict[str, Any] = {}
    for group, g in summary.items():
        dname, mname = group.split(" / ")
        rs = [r for r in records if (r["dataset"], r["model"]) == (dname, mname) and r.get("explain")]
        if not rs:
            continue
        by = {a: {r["seed"]: r for r in rs if r["arm"] == a} for a in g["arms"] if any(r["arm"] == a for r in rs)}
        keys = [k for k in KEYS if all(k in r["explain"] for r in rs)]
        arms = {a: {k: describe([r["explain"][k] for r in runs.values()]) for k in keys} for a, runs in by.items()}
        course = {a: [{"epoch": pts[0]["epoch"], **{k: sum(p[k] for p in pts) / len(pts) for k in keys}}
                      for pts in zip(*(r["explain_curve"] for r in runs.values()))] for a, runs in by.items()}
        comps = []
        pairs = [(a, "baseline") for a in by if a != "baseline" and "baseline" in by]
        controls = [a for a in by if arm_kind(g["arms"][a]["kind"]).control]
        pairs += [(a, c) for a in by if arm_kind(g["arms"][a]["kind"]).proxy_like for c in controls]
        for a, b in pairs:
            seeds = sorted(set(by[a]) & set(by[b]))
            for key, label, _ in COMPARED:
                if key in keys and seeds:
                    d = paired([by[a][s]["explain"][key] for s in seeds], [by[b][s]["explain"][key] for s in seeds])
                    comps.append({"arm": a, "versus": b, "metric": key, **d, "direction": verdict(d, "higher", "lower")})
        out[group] = {"arms": arms, "course": course, "comparisons": comps}
    return out


def _verdict(group: str, e: Dict[str, Any]) -> List[str]:
    """One generated sentence per Proxy Attention arm against the random-mask control."""
    lines = []
    for c in e["comparisons"]:
        if c["versus"] != "random-mask" or c["metric"] not in ("eval_cue_energy", "eval_object_energy"):
            continue
        where = "on the spurious cue" if "cue" in c["metric"] else "on the digit"
        a, b = e["arms"][c["arm"]][c["metric"]]["mean"], e["arms"]["random-mask"][c["metric"]]["mean"]
        lines.append(f"- {group}, {c['arm']} against random-mask: {_fmt(c['metric'], a)} against {_fmt(c['metric'], b)} of the "
                     f"map's mass {where}, {_diff(c['metric'], c)}: {c['direction']}.")
    return lines


def explanation_section(expl: Dict[str, Any], study: Any, info: Dict[str, str]) -> List[str]:
    """The report's "Explanations" section (markdown lines); empty when no run measured them."""
    if not expl:
        return []
    n = sum(len(e["comparisons"]) for e in expl.values())
    lines = [
        "## Explanations", "",
        f"Measured on a fixed set of test images per dataset, the same for every arm and seed, after each refresh point of the "
        f"schedule and after training, with each arm's own method (*own*) and with `{study.explain_method}` for every arm "
        f"(*eval*; the tables show it unless marked), maps of the predicted class, {study.explain_steps} deletion / insertion "
        "steps (`benchmarks/study/explain.py`, `proxyaug.metrics`). *cue energy*: share of the map's mass on the 2x2 training "
        "cue pasted at the label's position (ground truth for \"looks at the shortcut\"; a uniform map puts 6.25 % there); "
        "*object energy*: share on the digit's ink; *deletion* (black baseline, lower is better) and *insertion* (blurred "
        "baseline, higher is better) AUC; *avg drop* (lower is better); *acc*: accuracy on these images. "
        f"Differences are paired by seed with 95 % t-intervals; this section holds {n} intervals (about 1 in 20 exclude 0 by "
        "chance).", "",
    ]
    verdicts = [line for group, e in expl.items() for line in _verdict(group, e)]
    if verdicts:
        lines += ["Proxy Attention against its random-mask control (same images masked, same area, random place):", "", *verdicts, ""]
    for group, e in expl.items():
        cols = [k for k in ("eval_cue_energy", "own_cue_energy", "eval_object_energy", "eval_deletion", "eval_insertion",
                            "eval_drop", "eval_sparsity", "acc") if k in next(iter(e["arms"].values()))]
        lines += [f"### {group}", "", info.get(group.split(" / ")[0], ""), "",
                  "| arm | " + " | ".join(c.replace("eval_", "").replace("own_", "own ").replace("_", " ") for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for a, m in e["arms"].items():
            lines.append(f"| {a} | " + " | ".join(f"{_fmt(c, m[c]['mean'])} ± {_fmt(c, m[c]['std'])}" for c in cols) + " |")
        key = "eval_cue_energy" if "eval_cue_energy" in cols else "eval_object_energy" if "eval_object_energy" in cols else "eval_deletion"
        epochs = [p["epoch"] + 1 for p in next(iter(e["course"].values()))]
        lines += ["", f"{key.replace('eval_', '').replace('_', ' ')} after each measuring epoch (mean over seeds):", "",
                  "| arm | " + " | ".join(f"epoch {ep}" for ep in epochs) + " |", "|---|" + "---|" * len(epochs)]
        lines += [f"| {a} | " + " | ".join(_fmt(key, p[key]) for p in pts) + " |" for a, pts in e["course"].items()]
        lines += ["", "Paired differences (arm minus versus):", "", "| arm | versus | metric | difference (95 % CI) | |", "|---|---|---|---|---|"]
        lines += [f"| {c['arm']} | {c['versus']} | {c['metric'].replace('eval_', '').replace('_', ' ')} | {_diff(c['metric'], c)} | "
                  f"{c['direction']} |" for c in e["comparisons"]]
        grid = slug(f"explain-{group.replace(' / ', '-')}") + ".png"
        lines += ["", f"![{group}: the same test images, each arm's {study.explain_method} map (seed {study.seeds[0]})](grids/{grid})", ""]
    return lines


def explanation_grids(out: str, expl: Dict[str, Any], method: str) -> List[str]:
    """Per group: rows are the same test images; columns the image, then each arm's map over it,
    the cue (or the object) outlined in cyan. From the maps saved by the first seed's runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import proxyaug as pa

    written = []
    for group, e in expl.items():
        saved = {a: _load(out, group, a) for a in e["arms"]}
        saved = {a: s for a, s in saved.items() if s is not None}
        if not saved:
            continue
        first = next(iter(saved.values()))
        x, regions = first["x"], first["regions"]
        region = regions.get("cue", regions.get("object"))
        h, w = x.shape[-2:]
        rows, cols = len(x), 1 + len(saved)
        fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.5), squeeze=False)
        for r in range(rows):
            img = x[r].expand(3, -1, -1).permute(1, 2, 0)
            panels = [img] + [0.5 * img + 0.5 * pa.viz.colorize(pa.functional.upsample_maps(s["maps"][r : r + 1], (h, w)))[0].permute(1, 2, 0)
                              for s in saved.values()]
            for c, panel in enumerate(panels):
                ax = axes[r, c]
                ax.imshow(panel.clamp(0, 1).numpy())
                if region is not None:  # padded, so that a region on the border is closed
                    z = torch.nn.functional.pad(region[r].float(), (1, 1, 1, 1)).numpy()
                    ax.contour(range(-1, w + 1), range(-1, h + 1), z, levels=[0.5], colors="cyan", linewidths=0.8)
                ax.set_xticks([]), ax.set_yticks([])
                if r == 0:
                    ax.set_title("image" if c == 0 else list(saved)[c - 1], fontsize=6)
        fig.suptitle(f"{group}: {method} maps of the predicted class", fontsize=8)
        fig.tight_layout()
        path = os.path.join(out, "grids", slug(f"explain-{group.replace(' / ', '-')}") + ".png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _load(out: str, group: str, arm: str) -> Optional[Dict[str, Any]]:
    dname, mname = group.split(" / ")
    paths = glob.glob(os.path.join(out, "grids", "explain", slug(f"{dname}-{mname}-{arm}") + ".pt"))
    return torch.load(paths[0], map_location="cpu") if paths else None
