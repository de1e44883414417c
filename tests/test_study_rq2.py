"""RQ2's harness (issue 25): the small ViT, arms restricted to some models, the optimiser setting,
the comparison measured after training (benchmarks/study/compare.py) and its report
(compare_stats.py, compare_report.py, compare_plots.py)."""

import json
import math
import os

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("timm")

from benchmarks.data import load_data  # noqa: E402
from benchmarks.study import main, models  # noqa: E402
from benchmarks.study.compare import GRID, comparison_set, compare_path, measure_compare, save_compare  # noqa: E402
from benchmarks.study.compare_report import compare_report  # noqa: E402
from benchmarks.study.compare_stats import load_artifacts, summarize_compare  # noqa: E402
from benchmarks.study.config import Study, load_study  # noqa: E402
from benchmarks.study.curves import detectable  # noqa: E402
from benchmarks.study.explain import explanation_set  # noqa: E402
from benchmarks.study.loop import train_run  # noqa: E402
from benchmarks.study.runner import complete, load_done, plan, run_key  # noqa: E402

TINY_VIT = {"embed_dim": 16, "depth": 2, "num_heads": 2}
STUDY = """
datasets = ["digits"]
models = ["cnn", "vit"]
seeds = [0]
schedule = "p,1"
size = 28
test_fraction = 0.1
pool_size = 500
batch_size = 128
threads = 1
grids = 0
optimizer = "adamw"
lr = 0.002
weight_decay = 0.05
lr_schedule = "cosine"
{compare}
[[arms]]
name = "baseline"
kind = "none"

[[arms]]
name = "proxy"
kind = "proxy"
fraction = 1.0
threshold = 0.5
models = ["cnn"]
"""


def _config(tmp_path, name, compare=""):
    path = tmp_path / f"{name}.toml"
    path.write_text(STUDY.format(compare=compare))
    return str(path)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """The study above (a CNN and a tiny ViT on digits at 28 px) without the comparison, then the
    same folder with it: every run is measured again and replaces its record."""
    tmp = tmp_path_factory.mktemp("rq2")
    out = tmp / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "VIT_SHAPE", {**models.VIT_SHAPE, **TINY_VIT})
        main(["--config", _config(tmp, "off"), "--out", str(out)])
        before = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
        main(["--config", _config(tmp, "on", "compare = 30\n"), "--out", str(out)])
    after = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    return out, before, after, load_study(_config(tmp, "on", "compare = 30\n"), {"out": str(out)})


def test_the_vit_has_the_issues_shape_and_checks_its_size():
    from timm.models.vision_transformer import VisionTransformer

    vit = models.build_model("vit", 10, 1, 28)
    assert isinstance(vit, VisionTransformer) and sum(p.numel() for p in vit.parameters()) == 456_394
    assert tuple(vit.patch_embed.grid_size) == (7, 7) and vit.num_prefix_tokens == 1 and len(vit.blocks) == 6
    assert vit(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="size=30 is not divisible by the ViT's patch size 4"):
        models.build_model("vit", 10, 1, 30)
    with pytest.raises(ValueError, match="pretrained=True is not valid for model 'vit'"):
        models.build_model("vit", 10, 1, 28, pretrained=True)


def test_the_vit_trains_in_the_harness_with_a_refreshing_arm_and_explanations(monkeypatch):
    monkeypatch.setattr(models, "VIT_SHAPE", {**models.VIT_SHAPE, **TINY_VIT})
    study = Study(datasets=["digits"], models=["vit"], size=28, schedule="1,p", batch_size=256, optimizer="adamw", lr=0.002,
                  explain=8, explain_steps=2, grids=0, pool_size=400)
    data = load_data("digits", size=28, pool_size=400)
    arm = {"name": "proxy", "kind": "proxy", "schedule": "1,p", "method": "gradcam++", "mode": "blend", "threshold": 0.5, "weight": 0.1,
           "fraction": 1.0, "select": "wrong", "proxies": "replace", "layer": None}
    record = train_run(study, data, "vit", arm, 0, log=lambda s: None, explain=explanation_set(data, study))
    assert len(record["test_acc_curve"]) == 2 and all(math.isfinite(a) for a in record["test_acc_curve"])
    assert record["rounds"][0]["maps"] > 0 and record["rounds"][0]["layer"] == "blocks.1.norm1"  # Grad-CAM++ on the token grid
    assert 0.0 <= record["explain"]["eval_deletion"] <= 1.0


def test_arm_models_restrict_the_plan_and_leave_keys_as_they_were(tmp_path):
    study = load_study(_config(tmp_path, "plan"), {"seeds": [0, 1]})
    planned = [(p.run[1], p.run[2]["name"], p.run[3]) for p, _ in plan(study)]
    assert sorted(planned) == sorted((m, a, s) for s in (0, 1) for m, a in (("cnn", "baseline"), ("cnn", "proxy"), ("vit", "baseline")))
    unrestricted = load_study(_config(tmp_path, "plan"), {"seeds": [0, 1]})
    unrestricted.arms = [{k: v for k, v in a.items() if k != "models"} for a in unrestricted.arms]
    keys = {(p.run[1], p.run[2]["name"], p.run[3]): key for p, key in plan(unrestricted)}
    assert all(keys[(p.run[1], p.run[2]["name"], p.run[3])] == key for p, key in plan(study))
    narrowed = load_study(_config(tmp_path, "plan"), {"models": ["vit"]})  # --models narrows; the cnn-only arm plans nothing
    assert [(p.run[1], p.run[2]["name"]) for p, _ in plan(narrowed)] == [("vit", "baseline")]


def _records(path):
    out = {}
    for line in open(path):
        try:  # another process may be appending to it
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[rec["key"]] = rec
    return out


@pytest.mark.parametrize("preset", ["fashion", "fashion-curves", "study"])
def test_the_committed_presets_plan_the_keys_of_their_committed_runs(preset):
    study = load_study(preset, {})
    path = os.path.join(study.out, "runs.jsonl")
    if not os.path.exists(path):
        pytest.skip(f"{path} is not in this checkout")
    done = _records(path)
    keys = {key for _, key in plan(study, done)}
    assert done and set(done) <= keys, f"{len(set(done) - keys)} committed runs of {preset} are no longer planned under their key"
    if preset != "fashion-curves":  # a finished study: every planned run is committed
        assert keys == set(done)


def test_the_optimizer_enters_the_key_only_when_not_sgd():
    arm = {"name": "baseline", "kind": "none", "schedule": "1"}
    sgd, adamw = Study(), Study(optimizer="adamw")
    assert "optimizer" not in sgd.training_settings() and adamw.training_settings()["optimizer"] == "adamw"
    assert run_key("digits", "cnn", arm, 0, sgd) != run_key("digits", "cnn", arm, 0, adamw)
    assert run_key("digits", "cnn", arm, 0, sgd) == run_key("digits", "cnn", arm, 0, Study(optimizer="sgd", compare=10))


def test_the_preset_plans_the_vit_baseline_beside_the_cnn_arms():
    study = load_study("fashion-rq2", {})
    planned = [(p.run[1], p.run[2]["name"]) for p, _ in plan(study, {})]
    assert len(study.seeds) >= 5 and study.compare >= 500 and study.optimizer == "adamw"
    assert sorted(set(planned)) == [("cnn", "baseline"), ("cnn", "proxy"), ("cnn", "proxy-loss"), ("cnn", "random-erasing"), ("vit", "baseline")]
    assert len(planned) == 5 * len(study.seeds)


def test_training_is_bit_identical_with_the_comparison_on_or_off(compared):
    out, before, after, _ = compared
    assert len(before) == len(after) == 3 and all("compare_settings" not in r for r in before)
    old = {r["key"]: r for r in before}
    for r in after:
        assert r["compare_settings"] == {"compare": 30, "compare_patch": 4, "compare_grids": [2, 4, 7]}
        for k in ("test_acc_curve", "val_acc_curve", "loss_curve"):
            assert r[k] == old[r["key"]][k]
        assert [{a: b for a, b in x.items() if a != "seconds"} for x in r["rounds"]] == \
            [{a: b for a, b in x.items() if a != "seconds"} for x in old[r["key"]]["rounds"]]


def test_the_artifacts_have_the_documented_shapes(compared):
    out, _, after, study = compared
    test_size = len(load_data("digits", size=28, test_fraction=0.1).test)
    indices = []
    for r in after:
        a = torch.load(compare_path(str(out), r["key"]), weights_only=False)
        vit = r["model"] == "vit"
        assert a["methods"] == (["rollout", "legrad", "gradcam++"] if vit else ["gradcam++"])
        assert (a["model"], a["arm"], a["seed"], a["grid"], a["patch"], a["grids"]) == (r["model"], r["arm"], r["seed"], GRID, 4, [2, 4, 7])
        assert a["index"].shape == (30,) and a["correct"].shape == (test_size,) and a["correct"].dtype == torch.bool
        assert a["labels"].shape == a["pred"].shape == (test_size,) and torch.equal(a["correct"], a["pred"] == a["labels"])
        assert a["occlusion_random"].shape == a["occlusion_salient"].shape == (test_size, 10) and a["shuffle"].shape == (test_size, 3)
        assert torch.equal(a["occlusion_random"][:, 0], a["correct"]) and torch.equal(a["occlusion_salient"][:, 0], a["correct"])
        for m in a["methods"]:
            assert a["maps"][m].shape == (30, GRID, GRID) and 0 <= a["maps"][m].min() and a["maps"][m].max() <= 1
            assert a["entropy"][m].shape == a["half_area"][m].shape == (30,) and ((a["half_area"][m] > 0) & (a["half_area"][m] <= 1)).all()
        indices.append(a["index"])
    assert all(torch.equal(i, indices[0]) for i in indices)  # the same images for every arm and model
    records = list(load_done(str(out / "runs.jsonl")).values())
    assert all(complete(r, study) for r in records)
    os.remove(compare_path(str(out), records[0]["key"]))
    assert not complete(records[0], study)  # a missing file: measured again


def test_the_measurement_draws_no_random_numbers_and_replays_its_drops():
    study = Study(size=28, compare=12, test_fraction=0.1)
    cset = comparison_set(load_data("digits", size=28, test_fraction=0.1), study)
    torch.manual_seed(0)
    model = models.build_model("cnn", 10, 1, 28)
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    a = measure_compare(model, cset, lambda x: (x - 0.5) / 0.5, study)
    assert torch.equal(torch.get_rng_state(), rng) and model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()) and all(p.grad is None for p in model.parameters())
    b = measure_compare(model, cset, lambda x: (x - 0.5) / 0.5, study)
    assert torch.equal(a["occlusion_random"], b["occlusion_random"]) and torch.equal(a["shuffle"], b["shuffle"])


def test_the_report_section_is_written_from_the_runs(compared):
    out, _, _, _ = compared
    report = (out / "report.md").read_text()
    assert "## Attention like a ViT's? (RQ2)" in report and "compare-occlusion-digits-cnn.png" in report
    assert (out / "compare-occlusion-digits-cnn.png").stat().st_size > 0 and (out / "compare-agreement-digits-cnn.png").stat().st_size > 0
    group = json.loads((out / "compare.json").read_text())["groups"]["digits / cnn"]
    assert set(group["pairs"]) == {"baseline", "proxy"} and group["verdicts"]["proxy"]["verdict"] == "too few seeds to tell"


@pytest.mark.parametrize("setting, message", [
    ({"compare": -1}, "compare=-1 is not valid"),
    ({"compare": 5, "skip_test": True}, "skip_test=True forbids"),
    ({"compare": 5, "compare_patch": 5}, r"compare_patch=5 does not divide size=28; expected one of \[1, 2, 4, 7, 14, 28\]"),
    ({"compare": 5, "compare_grids": [3]}, r"compare_grids=\[3\] is not valid for size=28"),
    ({"optimizer": "adam"}, "optimizer='adam' is not valid; expected one of 'sgd', 'adamw'"),
    ({"size": 30}, "size=30 is not divisible by the ViT's patch size 4"),
])
def test_bad_settings_are_refused_at_load_naming_them(tmp_path, setting, message):
    with pytest.raises(ValueError, match=message):
        load_study(_config(tmp_path, "bad"), setting)


@pytest.mark.parametrize("models_value, message", [
    ('["cnnn"]', r"arm 'proxy' has models=\['cnnn'\]: \['cnnn'\] not in the study's models"),
    ('"cnn"', "arm 'proxy' has models='cnn'; expected a non-empty list"),
    ("[]", "arm 'proxy' has models=\\[\\]; expected a non-empty list"),
])
def test_bad_arm_models_are_refused_naming_the_arm(tmp_path, models_value, message):
    path = tmp_path / "arm.toml"
    path.write_text(STUDY.format(compare="").replace('models = ["cnn"]\n', f"models = {models_value}\n"))
    with pytest.raises(ValueError, match=message):
        load_study(str(path), {})


def test_tune_with_arm_models_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"arm 'proxy' has models=\['cnn'\], which tune does not support"):
        load_study(_config(tmp_path, "tune"), {"tune": {"lr": [0.1]}})


# -- the report on synthetic measurements with a known answer -------------------------------------

T, N, SEEDS = 400, 24, range(5)


def _artifact(gen, *, maps, correct, methods=("gradcam++",), model="cnn", arm="baseline", seed=0):
    """A measurement as compare.measure_compare writes it; drops and shuffles lose images at random."""
    lose = lambda p: correct.unsqueeze(1) & (torch.rand(T, len(p), generator=gen) > torch.tensor(p))  # noqa: E731
    fractions = [i / 10 for i in range(10)]
    occ = lose(fractions)
    occ[:, 0] = correct
    return {"methods": list(methods), "grid": GRID, "patch": 4, "fractions": fractions, "grids": [2, 4, 7],
            "index": torch.arange(N), "labels": torch.zeros(T, dtype=torch.int16), "pred": (~correct).to(torch.int16),
            "correct": correct, "maps": maps, "entropy": {m: torch.ones(N) for m in methods},
            "half_area": {m: torch.full((N,), 0.3) for m in methods}, "occlusion_random": occ, "occlusion_salient": occ.clone(),
            "shuffle": lose([0.2, 0.5, 0.8]), "dataset": "synthetic", "model": model, "arm": arm, "seed": seed}


def _synthetic(out, study):
    """A ViT whose seeds share most of their maps and mistakes; a CNN baseline and a Random Erasing
    control unrelated to it; ``copy``, a Proxy Attention arm whose maps, mistakes and curves are
    the ViT's own; ``noisy``, one with maps of noise."""
    gen = torch.Generator().manual_seed(0)
    shared = torch.rand(N, GRID, GRID, generator=gen)
    records, arts = [], {}
    for s in SEEDS:
        vit_maps = {m: shared + 0.3 * torch.rand(N, GRID, GRID, generator=gen) for m in ("rollout", "legrad", "gradcam++")}
        vit_correct = torch.rand(T, generator=gen) < 0.9
        arts[("vit", "baseline", s)] = _artifact(gen, maps=vit_maps, correct=vit_correct, methods=("rollout", "legrad", "gradcam++"), model="vit", seed=s)
        for arm, kind in (("baseline", "none"), ("random-erasing", "random-erasing"), ("noisy", "proxy")):
            own = {"gradcam++": torch.rand(N, GRID, GRID, generator=gen)}
            arts[("cnn", arm, s)] = _artifact(gen, maps=own, correct=torch.rand(T, generator=gen) < 0.8, arm=arm, seed=s)
        copy = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in arts[("vit", "baseline", s)].items()}
        copy.update(methods=["gradcam++"], maps={"gradcam++": vit_maps["rollout"]}, model="cnn", arm="copy")
        arts[("cnn", "copy", s)] = copy
    kinds = {"baseline": "none", "random-erasing": "random-erasing", "noisy": "proxy", "copy": "proxy"}
    for (model, arm, s), a in arts.items():
        key = f"{model}-{arm}-{s}"
        save_compare(compare_path(str(out), key), a)
        records.append({"dataset": "synthetic", "model": model, "arm": arm, "kind": kinds[arm], "seed": s, "key": key,
                        "compare_settings": study.compare_settings(), "compare_info": "synthetic"})
    return records


def test_the_report_recovers_a_known_effect_and_renders(tmp_path):
    study = Study(out=str(tmp_path), compare=N, size=28, seeds=list(SEEDS))
    records = _synthetic(tmp_path, study)
    lines = compare_report(study, records)
    g = json.loads((tmp_path / "compare.json").read_text())["groups"]["synthetic / cnn"]
    copy, noisy, b = g["pairs"]["copy"], g["pairs"]["noisy"], g["brackets"]
    assert copy["spearman_rollout"]["mean"] == pytest.approx(1.0) and copy["iou_rollout"]["mean"] == pytest.approx(1.0)
    assert copy["spearman_rollout"]["mean"] > b["ceiling_vit"]["spearman_rollout"]["mean"] > 0.5  # beyond the ceiling
    assert copy["kappa"]["mean"] == pytest.approx(1.0) and copy["shuffle_auc_gap"]["mean"] == pytest.approx(0.0)
    for m in ("rollout", "legrad"):  # noise maps sit at the noise floor
        assert abs(noisy[f"spearman_{m}"]["mean"] - b["floor_noise"][f"spearman_{m}"]["mean"]) < 0.1
        assert abs(noisy[f"spearman_{m}"]["mean"]) < 0.1
    assert g["verdicts"]["copy"]["verdict"] == "Proxy Attention approximates ViT attention"
    assert g["verdicts"]["noisy"]["verdict"].startswith("does not approximate ViT attention")
    toward = {(c["arm"], c["versus"], c["measure"]): c["direction"] for c in g["comparisons"]}
    assert toward[("copy", "baseline", "spearman_rollout")] == toward[("copy", "random-erasing", "kappa")] == "toward"
    text = "\n".join(lines)
    assert "## Attention like a ViT's? (RQ2)" in text and "**synthetic / cnn, copy**: Proxy Attention approximates ViT attention." in text
    assert "*ceiling*: ViT seed s vs seed s+1" in text and "*floor*: a centred Gaussian blob" in text
    assert all("||" not in line for line in lines if line.startswith("|"))  # no cell breaks the table
    for name in ("compare-occlusion-synthetic-cnn.png", "compare-agreement-synthetic-cnn.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_no_vit_measured_yet_gives_a_short_section(tmp_path):
    study = Study(out=str(tmp_path), compare=N, size=28)
    records = [r for r in _synthetic(tmp_path, study) if r["model"] == "cnn"]
    assert summarize_compare({}, records) == {}
    assert "Not yet" in "\n".join(compare_report(study, records))


def test_the_power_table_states_what_the_seeds_can_see_against_the_way_to_the_ceiling(tmp_path):
    study = Study(out=str(tmp_path), compare=N, size=28, seeds=list(SEEDS))
    records = _synthetic(tmp_path, study)
    text = "\n".join(compare_report(study, records))
    g = json.loads((tmp_path / "compare.json").read_text())["groups"]["synthetic / cnn"]
    rows = {(r["arm"], r["versus"], r["measure"]): r for r in g["power"]}
    headline = ("spearman_rollout", "spearman_legrad", "kappa", "occlusion_random_auc_gap", "shuffle_auc_gap")
    assert set(rows) == {(c["arm"], c["versus"], c["measure"]) for c in g["comparisons"] if c["measure"] in headline}
    for (arm, versus, m), r in rows.items():
        c = next(c for c in g["comparisons"] if (c["arm"], c["versus"], c["measure"]) == (arm, versus, m))
        assert r["n"] == c["n"] == len(SEEDS) and r["sd"] == pytest.approx(c["sd"])
        assert r["detectable"] == pytest.approx(detectable(c["sd"], c["n"]))
    # the way from the baseline to the ViT's ceiling: agreement and kappa as they are, a gap as minus its distance
    base, ceiling = g["pairs"]["baseline"], g["brackets"]["ceiling_vit"]
    for m in ("spearman_rollout", "spearman_legrad"):
        r = rows[("copy", "baseline", m)]
        assert r["way"] == pytest.approx(ceiling[m]["mean"] - base[m]["mean"]) and r["way"] > 0.3
        assert r["share"] == pytest.approx(r["detectable"] / r["way"])
        assert detectable(r["sd"], r["seeds"]) <= 0.25 * r["way"] < detectable(r["sd"], r["seeds"] - 1) or r["seeds"] == 2
    # the synthetic ViT's seeds err independently: its ceiling's kappa is no nearer than the baseline's, so no way, no share
    r = rows[("copy", "baseline", "kappa")]
    assert r["way"] == pytest.approx(ceiling["kappa"]["mean"] - base["kappa"]["mean"]) and r["way"] <= 0
    assert math.isnan(r["share"]) and math.isnan(r["seeds"])
    assert "What these seeds can see on the verdict's measures" in text and "| copy | baseline | Spearman with rollout | 5 |" in text
    # with two seeds the table still plans; with one there is nothing to say
    two = [r for r in records if r["seed"] < 2]
    assert all(r["n"] == 2 for r in summarize_compare(load_artifacts(study, two), two)["synthetic / cnn"]["power"])
    one = [r for r in records if r["seed"] == 0]
    assert summarize_compare(load_artifacts(study, one), one)["synthetic / cnn"]["power"] == []
    # a CNN baseline with no seed the ViT has: the controls' comparisons still plan nothing they cannot
    apart = [r for r in records if (r["model"], r["arm"]) != ("cnn", "baseline") or r["seed"] == 4]
    apart = [r for r in apart if r["model"] == "cnn" or r["seed"] < 4]
    rows = summarize_compare(load_artifacts(study, apart), apart)["synthetic / cnn"]["power"]
    assert rows and all(r["versus"] == "random-erasing" and math.isnan(r["way"]) and math.isnan(r["seeds"]) for r in rows)
