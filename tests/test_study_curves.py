"""The learning-curve study (RQ3, benchmarks/study/budget.py, tuning.py, curves.py): nested,
class-balanced, paired subsets; the step budget and step-based schedules; steps to target with
censoring, the exchange rate and the power figures on synthetic curves; and that the tuning and the
schedule never read the test split."""

import dataclasses
import json
import math

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from benchmarks.data import load_data  # noqa: E402
from benchmarks.study import curves, runner  # noqa: E402
from benchmarks.study.budget import cosine_warmup, eval_after, nested_subset, unit_steps  # noqa: E402
from benchmarks.study.config import Study, arm_settings, check_axes, load_study  # noqa: E402
from benchmarks.study.loop import Run, train_run  # noqa: E402
from benchmarks.study.tuning import choose, select_arms, tuning_grid  # noqa: E402

LABELS = torch.arange(3000) % 10  # 300 images per class


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_subsets_are_nested_class_balanced_and_disjoint(seed):
    sizes = [100, 250, 600, 1500, 3000]
    parts = [nested_subset(LABELS, n, seed, 0.2, val_cap=20) for n in sizes]
    for n, (train, val) in zip(sizes, parts):
        assert len(train) + len(val) == n
        assert not set(train.tolist()) & set(val.tolist())
        counts = LABELS[torch.cat([train, val])].bincount(minlength=10)
        assert counts.tolist() == [n // 10] * 10  # class-balanced
        assert LABELS[val].bincount(minlength=10).max() <= 20  # the cap
    for (t1, v1), (t2, v2) in zip(parts, parts[1:]):
        assert set(t1.tolist()) <= set(t2.tolist()) and set(v1.tolist()) <= set(v2.tolist())


def test_subsets_are_drawn_from_the_seed_and_uneven_sizes_stay_balanced():
    a, b, c = (nested_subset(LABELS, 500, s, 0.2) for s in (0, 0, 1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # one seed: one subset (the arms share it)
    assert not torch.equal(a[0], c[0])
    train, val = nested_subset(LABELS, 105, 0, 0.2)
    assert LABELS[torch.cat([train, val])].bincount().tolist() == [11] * 5 + [10] * 5


@pytest.mark.parametrize("kwargs, match", [
    ({"size": 5}, "size=5"), ({"size": 3001}, "size=3001"), ({"size": 100, "val_fraction": 1.0}, "val_fraction"),
    ({"size": 100, "val_cap": 0}, "val_cap=0"),
])
def test_subset_errors_name_the_argument(kwargs, match):
    args = {"val_fraction": 0.2, **kwargs}
    with pytest.raises(ValueError, match=match):
        nested_subset(LABELS, args.pop("size"), 0, **args)


def test_step_budget_helpers():
    assert unit_steps(2560, 16) == 160 and eval_after(640, 16, 320) == [7, 15]
    with pytest.raises(ValueError, match="does not divide"):
        unit_steps(100, 16)
    with pytest.raises(ValueError, match="eval_every=50"):
        eval_after(320, 16, 50)
    f = cosine_warmup(200, 0.05)
    lrs = [f(t) for t in range(200)]
    assert lrs[9] == 1.0 and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(x >= y for x, y in zip(lrs[9:], lrs[10:]))  # decays after the warm-up


def _study(tmp_path, **kw):
    base = dict(datasets=["digits"], models=["cnn"], seeds=[0], schedule="p,1,1,1", size=16, batch_size=32, threads=1, grids=0,
                sizes=[60, 200], steps=[16, 8], eval_every=4, lr_schedule="cosine", out=str(tmp_path / "out"),
                arms=[{"name": "baseline", "kind": "none"}, {"name": "proxy", "kind": "proxy"}])
    base.update(kw)
    study = Study(**base)
    check_axes(study)
    return study


def test_a_run_takes_its_budget_in_steps_refreshes_at_its_fractions_and_evaluates_every_k(tmp_path):
    study = _study(tmp_path)
    data = load_data("digits", 16)
    one = dataclasses.replace(study, sizes=[200], steps=[16])
    run = Run(one, data, "cnn", {"name": "proxy", "kind": "proxy", "schedule": "p,1,1,1", **{k: v for k, v in curves.arm_kind("proxy").defaults.items()}}, 0)
    assert len(run.train_idx) + len(run.val_idx) == 200
    rec = train_run(one, data, "cnn", run.spec, 0, log=lambda s: None)
    assert rec["steps"] == 16 and rec["eval_steps"] == [4, 8, 12, 16] and len(rec["test_acc_curve"]) == 4
    assert [r["epoch"] for r in rec["rounds"]] == [0]  # after the first unit: 4 of the 16 steps
    assert rec["images_seen"] == 16 * 32 and rec["subset_size"] == 200 and len(rec["test_per_class"]) == 10
    assert run.opt.param_groups[0]["lr"] == pytest.approx(one.lr * cosine_warmup(16, one.warmup)(0))


def test_steps_to_target_censors_and_area_under_is_the_mean_accuracy():
    assert curves.steps_to_target([320, 640], [0.80, 0.85], 0.9) is None
    assert curves.steps_to_target([320, 640], [0.91, 0.85], 0.9) == 320
    assert curves.area_under([0, 100], [0.5, 0.7]) == pytest.approx(0.6)


def test_exchange_rate_recovers_a_known_data_multiplier():
    sizes = [600, 1500, 3000, 6000, 15000, 60000]
    law = lambda n: 1 - (3.0 * n ** -0.4 + 0.04)  # noqa: E731
    fit = curves.fit_curve(sizes, [law(n) for n in sizes])
    assert fit == pytest.approx((3.0, 0.4, 0.04), rel=1e-4)
    for n in sizes:  # an arm at n as good as the baseline at 2.5 n is worth 2.5x the data
        assert curves.exchange_rate(fit, n, law(2.5 * n)) == pytest.approx(2.5, rel=1e-3)
    assert math.isinf(curves.exchange_rate(fit, 600, 0.97))  # better than the asymptote


def test_power_figures_shrink_with_seeds_and_interaction_finds_a_growing_gap():
    assert curves.detectable(0.01, 20) < curves.detectable(0.01, 5)
    n = curves.seeds_for(0.006, 0.005)
    assert curves.detectable(0.006, n) <= 0.005 < curves.detectable(0.006, n - 1)
    gaps = {s: {600: 0.03 + 0.001 * s, 6000: 0.01, 60000: 0.0} for s in range(4)}
    d = curves.interaction(gaps)
    assert d["ci95_high"] < 0 and d["n"] == 4


def test_tuning_is_first_chooses_on_validation_and_never_reads_test(tmp_path, monkeypatch):
    """Tuning runs read no test image; the main runs come after every tuning run and use the
    choice; and a run's schedule, curves and refreshes do not depend on the test split."""
    real = load_data("digits", 16)
    reads = []

    class Watched(torch.utils.data.Dataset):
        def __init__(self, base, flip):
            self.base, self.flip = base, flip

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            reads.append(i)
            x, y = self.base[i]
            return x, (9 - y) if self.flip else y

    phases = []
    real_train_run = runner.train_run

    def spy(study, *a, **k):
        before = len(reads)
        rec = real_train_run(study, *a, **k)
        phases.append((study.skip_test, len(reads) - before, study.lr))
        return rec

    monkeypatch.setattr(runner, "train_run", spy)
    results = []
    for flip in (False, True):
        monkeypatch.setattr(runner, "load_data", lambda *a, **k: dataclasses.replace(real, test=Watched(real.test, flip)))
        study = _study(tmp_path, out=str(tmp_path / f"out{flip}"), tune={"lr": [0.01, 0.2]}, tune_seeds=[9])
        results.append({(r["arm"], r["subset_size"], r["steps"]): r for r in runner.run_study(study, log=lambda s: None)})
    tune = [p for p in phases if p[0]]
    assert len(tune) == 2 * 2 * 2 and all(n == 0 for _, n, _ in tune)  # 2 sizes x 2 lrs, twice: no test read
    assert all(p[0] for p in phases[:4]) and not any(p[0] for p in phases[4:12])  # tuning first
    done = runner.load_done(str(tmp_path / "outFalse" / "runs.jsonl"))
    chosen = choose(study, list(done.values()))
    for (arm, size, steps), rec in results[0].items():
        assert rec["lr"] == chosen[("digits", "cnn", size)]["lr"]
        other = results[1][(arm, size, steps)]  # the same run with the test labels changed
        assert rec["val_acc_curve"] == other["val_acc_curve"] and rec["loss_curve"] == other["loss_curve"]
        drop = lambda rounds: [{k: v for k, v in r.items() if k != "seconds"} for r in rounds]  # noqa: E731
        assert json.dumps(drop(rec["rounds"])) == json.dumps(drop(other["rounds"]))


def test_arms_run_without_the_baseline_get_the_tuning_it_made(tmp_path):
    """``--arms proxy`` plans the config's tuning runs (the baseline's) and, once they are done,
    the proxy runs of the full plan with the same keys and tuned settings; an unknown arm names itself."""
    study = _study(tmp_path, tune={"lr": [0.01, 0.2]}, tune_seeds=[9])
    only = select_arms(study, ["proxy"])
    tuning = runner.plan(study, {})
    assert [k for _, k in runner.plan(only, {})] == [k for _, k in tuning] and len(tuning) == 4
    done = {k: {"key": k, "phase": "tune", "dataset": "digits", "model": "cnn", "subset_size": p.study.sizes[0],
                "lr": p.study.lr, "weight_decay": p.study.weight_decay, "seed": 9, "val_acc": p.study.lr}
            for p, k in tuning}  # the higher lr "wins" at every size
    full = [(p.run[2]["name"], p.study.lr, k) for p, k in runner.plan(study, done) if p.phase == "main"]
    mine = [(p.run[2]["name"], p.study.lr, k) for p, k in runner.plan(only, done) if p.phase == "main"]
    assert mine == [f for f in full if f[0] == "proxy"] and len(mine) == 4 and {lr for _, lr, _ in mine} == {0.2}
    with pytest.raises(ValueError, match=r"--arms \['nope'\] not in the config"):
        select_arms(study, ["nope"])


def test_each_run_line_says_the_time_elapsed_and_left(tmp_path):
    """A user can plan: every run's log line has the time elapsed, and from the second run on the time
    the rest take at this pace."""
    lines = []
    runner.run_study(_study(tmp_path, sizes=[60], steps=[8]), log=lines.append)
    runs = [line for line in lines if line.startswith("run ")]
    assert len(runs) == 2 and runs[0].endswith(" elapsed]") and "left at this pace]" in runs[1]


def test_claims_keep_two_processes_off_one_run(tmp_path):
    path = str(tmp_path / "k.claim")
    with runner.claim(path) as first:
        with runner.claim(path) as second:
            assert first and not second
    with runner.claim(path) as again:
        assert again


@pytest.mark.parametrize("change, match", [
    ({"sizes": [100]}, "sets both"), ({"steps": [96], "sizes": [60], "eval_every": 7}, "eval_every=7"),
    ({"lr_schedule": "step"}, "lr_schedule"), ({"sizes": [60], "steps": [24], "tune": {"momentum": [0.9]}}, "tune="),
    ({"sizes": [60], "steps": [24], "tune": {"lr": [0.1]}, "tune_seeds": [0]}, "tune_seeds"),
    ({"sizes": [60, 60], "steps": [24]}, "repeats"),
])
def test_axis_settings_are_checked_before_any_run(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        load_study(None, {"schedule": "1,p,1", "out": str(tmp_path), **change})  # 3 units


def test_a_budget_that_does_not_divide_into_the_schedule_is_refused(tmp_path):
    with pytest.raises(ValueError, match="steps=16 does not divide into the 3 units of arm 'baseline'"):
        load_study(None, {"schedule": "1,p,1", "sizes": [60], "steps": [16]})


def test_the_preset_is_valid_and_its_grid_is_stated():
    study = load_study("fashion-curves", {})
    assert study.sizes[0] == 600 and max(study.steps) == 4 * min(study.steps)
    assert len(tuning_grid(study)) == 6


def test_per_class_accuracy_counts_each_class():
    from benchmarks.study.loop import accuracy

    class Zero(torch.nn.Module):  # predicts class 0 for every image
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 3).float()

    data = torch.utils.data.TensorDataset(torch.zeros(6, 1, 2, 2), torch.tensor([0, 0, 1, 2, 2, 2]))
    acc, per_class = accuracy(Zero(), data, lambda x: x, torch.device("cpu"), batch_size=4, per_class=True)
    assert acc == pytest.approx(2 / 6) and per_class == [1.0, 0.0, 0.0]
    assert accuracy(Zero(), data, lambda x: x, torch.device("cpu")) == pytest.approx(2 / 6)


def _synthetic(law, worth, seeds=(0, 1, 2), sizes=(600, 1500, 3000, 6000, 15000, 60000), steps=2560):
    """Records of a baseline on ``law`` and an arm worth ``worth`` times the data (plus seed noise
    shared by both arms: paired), with curves that reach their final accuracy at half the budget."""
    out = []
    for s in seeds:
        for n in sizes:
            for arm, kind, m in (("baseline", "none", 1.0), ("proxy", "proxy", worth)):
                acc = law(m * n) + 0.001 * s
                out.append({"dataset": "d", "model": "cnn", "steps": steps, "subset_size": n, "arm": arm, "kind": kind, "seed": s,
                            "test_acc": acc, "val_acc": acc, "eval_steps": [steps // 2, steps], "test_acc_curve": [acc, acc],
                            "masked_area_mean": 0.0, "train_size": n, "val_size": 0, "lr": 0.1, "weight_decay": 0.0,
                            "test_per_class": [acc] * 10, "rounds": [], "wall_s": 1.0,
                            "settings": {k: v for k, v in arm_settings({"name": arm, "kind": kind}, Study()).items() if k not in ("name", "kind")}})
    return out


def test_the_summary_finds_a_known_data_multiplier_and_a_known_gap():
    law = lambda n: 1 - (3.0 * n ** -0.4 + 0.04)  # noqa: E731
    summary = curves.curve_summary(_synthetic(law, 2.0), Study())
    (g,) = summary.values()
    assert all(r == pytest.approx(2.0, rel=1e-3) for r in g["exchange"]["rates"]["proxy"].values())
    assert all(r == pytest.approx(1.0) for r in g["exchange"]["rates"]["baseline"].values())
    comps = {c["size"]: c for c in g["comparisons"]}
    assert comps[600]["mean"] == pytest.approx(law(1200) - law(600)) and comps[600]["verdict"] == "better"
    assert g["interaction"][0]["ci95_high"] < 0  # the gain shrinks as the data grow
    targets = g["per_size"][600]["targets"]["0.99"]["steps"]
    assert targets["baseline"] == [1280, 1280, 1280] and targets["proxy"] == [1280, 1280, 1280]


def test_the_report_renders_from_records(tmp_path):
    from benchmarks.study.curves_report import curves_markdown
    from benchmarks.env import environment

    law = lambda n: 1 - (3.0 * n ** -0.4 + 0.04)  # noqa: E731
    records = _synthetic(law, 1.0)
    study = Study(sizes=[600], steps=[2560], eval_every=1280, out=str(tmp_path))
    text = curves_markdown(study, records, curves.curve_summary(records, study), environment("cpu"), "cmd", None)
    assert "## Verdict" in text and "proxy versus baseline: no detectable difference at any size" in text
    assert "## Seed plan" in text and "| 2,560 | 600 | proxy - baseline |" in text


def test_the_verdict_says_too_few_seeds_where_fewer_than_three_ran(tmp_path):
    from benchmarks.study.curves_report import curves_markdown
    from benchmarks.env import environment

    law = lambda n: 1 - (3.0 * n ** -0.4 + 0.04)  # noqa: E731
    study = Study(sizes=[600], steps=[2560], eval_every=1280, out=str(tmp_path))
    records = _synthetic(law, 1.0, seeds=(0, 1))
    text = curves_markdown(study, records, curves.curve_summary(records, study), environment("cpu"), "cmd", None)
    assert "proxy versus baseline: too few seeds to tell at any size" in text
    records = _synthetic(law, 1.0) + [r for r in _synthetic(law, 1.0, seeds=(3,), sizes=(600,))]  # 600 has 4 seeds,
    records = [r for r in records if not (r["seed"] == 2 and r["subset_size"] == 60000)]  # 60,000 only 2
    text = curves_markdown(study, records, curves.curve_summary(records, study), environment("cpu"), "cmd", None)
    assert "no detectable difference where 3 or more seeds ran; too few seeds to tell at 60,000" in text


def test_the_summary_compares_the_pairs_the_config_names(tmp_path):
    """A map-guided arm is compared with its map-free version when the config names it (``compare``),
    and the verdict gives that pair a line of its own."""
    from benchmarks.env import environment
    from benchmarks.study.curves_report import curves_markdown

    law = lambda n: 1 - (3.0 * n ** -0.4 + 0.04)  # noqa: E731
    records = []
    for arm, kind, worth in (("baseline", "none", 1.0), ("cutout-batch", "cutout-batch", 1.0), ("keep-cutout", "keep-cutout", 2.0)):
        for r in _synthetic(law, worth, sizes=(600,)):
            if r["arm"] == "proxy":
                records.append({**r, "arm": arm, "kind": kind})
            elif arm == "baseline":
                records.append(r)
    arms = [{"name": "baseline", "kind": "none"}, {"name": "cutout-batch", "kind": "cutout-batch"},
            {"name": "keep-cutout", "kind": "keep-cutout", "compare": ["cutout-batch", "absent"]}]
    (g,) = curves.curve_summary(records, Study(arms=arms)).values()
    pairs = [(c["arm"], c["versus"]) for c in g["comparisons"]]
    assert pairs == [("cutout-batch", "baseline"), ("keep-cutout", "baseline"), ("keep-cutout", "cutout-batch")]
    (c,) = [c for c in g["comparisons"] if c["versus"] == "cutout-batch"]
    assert c["mean"] == pytest.approx(law(1200) - law(600))
    study = Study(arms=arms, sizes=[600], steps=[2560], eval_every=1280, out=str(tmp_path))
    text = curves_markdown(study, records, curves.curve_summary(records, study), environment("cpu"), "cmd", None)
    assert "- keep-cutout versus cutout-batch: better at 600 (differences +" in text
    (g,) = curves.curve_summary(records, Study()).values()
    assert ("keep-cutout", "cutout-batch") not in [(c["arm"], c["versus"]) for c in g["comparisons"]]
