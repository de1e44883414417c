"""The accuracy study harness (benchmarks/study/, alias benchmarks.train) on tiny settings."""

import csv
import json

import pytest
import torch

import proxyaug as pa

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("kornia")
pytest.importorskip("albumentations")

from benchmarks import study as train  # noqa: E402
from benchmarks.data import CUE_POSITIONS, load_data, split_fingerprint, split_pool  # noqa: E402

KINDS = set(train.KINDS)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Every arm of the tiny preset, 2 seeds; the runs' records and output folder."""
    out = tmp_path_factory.mktemp("tiny")
    summary = train.main(["--preset", "tiny", "--out", str(out), "--threads", "2"])
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    return out, records, summary


def test_a_study_finishes_with_every_output(tiny):
    out, records, summary = tiny
    assert {r["kind"] for r in records} == KINDS
    assert len(records) == 13 * 2
    for name in ("runs.csv", "runs.jsonl", "summary.json", "report.md", "bars.png", "differences.png", "accuracy-shortcut-digits-cnn.png"):
        assert (out / name).stat().st_size > 0
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert len(rows) == len(records)
    for column in ("dataset", "model", "arm", "seed", "epochs", "test_acc", "wall_s", "method", "mode", "threshold", "fraction"):
        assert column in rows[0]
    assert all(0.0 <= float(r["test_acc"]) <= 1.0 and int(r["epochs"]) == 5 for r in rows)
    # a proxy grid per refresh for the first seed of the map-based arms (two refreshes)
    grids = sorted(p.name for p in (out / "grids").iterdir())
    for arm in ("proxy", "proxy-append", "random-mask"):
        assert [g for g in grids if f"-{arm}-seed0-" in g] == [f"shortcut-digits-cnn-{arm}-seed0-refresh{k}.png" for k in (1, 2)]
    report = (out / "report.md").read_text()
    assert "## Verdict" in report and "re-splitting inflates validation" in report and "vs baseline, pp (95 % CI)" in report
    group = summary["shortcut-digits / cnn"]
    assert {c["arm"] for c in group["comparisons"] if c["versus"] == "baseline"} == {r["arm"] for r in records} - {"baseline"}
    assert all(c["n"] == 2 for c in group["comparisons"])


def test_the_map_guided_arms_capture_maps_and_fall_back_to_their_map_free_rule(tiny):
    """salient-mix and keep-cutout write captured maps at each round (every sample seen, budget 1.0); before
    their first commit they run their map-free rule, so their first epoch equals cutmix's and cutout-batch's."""
    _, records, _ = tiny
    by = {(r["arm"], r["seed"]): r for r in records}
    for guided, free in (("salient-mix", "cutmix"), ("keep-cutout", "cutout-batch")):
        for seed in (0, 1):
            rounds = by[(guided, seed)]["rounds"]
            assert rounds and all(r["written"] > 0 for r in rounds)
            assert by[(guided, seed)]["loss_curve"][0] == by[(free, seed)]["loss_curve"][0]  # the same draws, no map yet
            assert by[(guided, seed)]["test_acc_curve"] != by[("baseline", seed)]["test_acc_curve"]


def test_every_arm_sees_the_same_images_per_epoch_and_epochs(tiny):
    _, records, _ = tiny
    assert len({(r["epochs"], r["images_seen"], r["train_size"]) for r in records}) == 1
    assert records[0]["images_seen"] == records[0]["epochs"] * records[0]["train_size"]


def test_the_split_never_changes_between_rounds_except_in_the_thesis_protocol(tiny):
    _, records, _ = tiny
    data = load_data("shortcut-digits", size=16)
    fixed = split_fingerprint(split_pool(data.pool_labels, 0.2, 0)[0])
    for r in records:
        rounds = len(pa.ProxySchedule.parse(r["settings"]["schedule"]).refresh_epochs)  # two; the in-step arm's four
        assert len(r["splits"]) == 1 + rounds  # the start, and after each round
        if r["kind"] == "thesis-protocol":
            assert r["splits"][0] == fixed and len(set(r["splits"])) == 3
        else:
            assert set(r["splits"]) == {fixed}


def test_paired_runs_start_from_the_same_weights(tiny):
    _, records, _ = tiny
    # before the first refresh every arm that does nothing on the batch trains identically
    first = {(r["arm"], r["seed"]): r["test_acc_curve"][0] for r in records}
    for seed in (0, 1):
        values = {first[(a, seed)] for a in ("baseline", "proxy", "proxy-append", "random-mask", "thesis-protocol")}
        assert len(values) == 1


def test_controls_match_the_proxy_refresh(tiny):
    _, records, _ = tiny
    by = {(r["arm"], r["seed"]): r for r in records}
    for seed in (0, 1):
        proxy = by[("proxy", seed)]["rounds"]
        for arm in ("random-mask", "random-erasing", "cutout", "keepaugment"):
            rounds = by[(arm, seed)]["rounds"]
            assert len(rounds) == len(proxy) == 2
            assert all(0.0 < r["masked_area"] < 1.0 and 0.0 < r["p"] <= 1.0 for r in rounds)


def test_rerun_skips_finished_runs_and_resumes_an_interrupted_one(tmp_path):
    argv = ["--preset", "tiny", "--out", str(tmp_path), "--arms", "baseline", "proxy", "--seeds", "0"]
    calls = []

    def stop_after_two_epochs(line):
        calls.append(line)
        if sum("epoch" in c for c in calls) == 2:
            raise KeyboardInterrupt

    study = train.load_study("tiny", {"out": str(tmp_path), "seeds": [0]})
    study.arms = [a for a in study.arms if a["name"] in ("baseline", "proxy")]
    with pytest.raises(KeyboardInterrupt):
        train.run_study(study, log=stop_after_two_epochs)
    assert len(list((tmp_path / "checkpoints").iterdir())) == 1
    lines = []
    records = train.run_study(study, log=lines.append)
    assert any(line.startswith("resumed from") and "after epoch 2" in line for line in lines)
    assert [r["epochs"] for r in records] == [5, 5] and len(records[0]["test_acc_curve"]) == 5
    # the resumed run ends where an uninterrupted one does
    fresh = train.load_study("tiny", {"out": str(tmp_path / "again"), "seeds": [0]})
    fresh.arms = [a for a in fresh.arms if a["name"] == "baseline"]
    again = train.run_study(fresh, log=lambda _: None)
    assert again[0]["test_acc_curve"] == records[0]["test_acc_curve"]
    # a second call trains nothing
    lines.clear()
    train.main(argv)
    assert (tmp_path / "runs.jsonl").read_text().count("\n") == 2
    assert not list((tmp_path / "checkpoints").iterdir())


def test_config_errors_name_the_setting(tmp_path):
    with pytest.raises(ValueError, match=r"arms\[0\]\.kind='mixup' is not valid"):
        train.expand_arms([{"kind": "mixup"}])
    with pytest.raises(ValueError, match=r"unknown settings \['treshold'\]"):
        train.expand_arms([{"kind": "proxy", "treshold": 0.5}])
    with pytest.raises(ValueError, match="same epochs"):
        train.load_study(None, {"schedule": "2,p", "arms": [{"kind": "none"}, {"kind": "proxy", "schedule": "1,p"}]})
    with pytest.raises(ValueError, match=r"unknown study settings \['epochz'\]"):
        train.load_study(None, {"epochz": 3})
    with pytest.raises(FileNotFoundError, match="preset: demo"):
        train.load_study("nope", {})
    with pytest.raises(ValueError, match="arm names must be unique"):
        train.expand_arms([{"kind": "proxy"}, {"kind": "proxy"}])
    with pytest.raises(RuntimeError, match="never downloads"):
        load_data("cifar10", root=str(tmp_path))
    with pytest.raises(ValueError, match="dataset='svhn' is not supported"):
        load_data("svhn")


def test_grid_expansion_covers_every_combination():
    study = train.load_study("thesis-grid", {})
    proxies = [train.arm_settings(a, study) for a in study.arms if a["kind"] == "proxy"]
    assert len(proxies) == 3 * 2 * 2 * 2 + 3 * 3 * 2 * 2
    assert len({(a["mode"], a["method"], a["threshold"], a["weight"], a["fraction"]) for a in proxies}) == len(proxies)
    assert {a["mode"] for a in proxies} == {"blend", "black", "mean", "blur"}


def test_shortcut_cue_is_in_the_pool_and_absent_at_test():
    raw = load_data("shortcut-digits", size=8)  # the 8x8 frame: the cue is exact there
    clean = load_data("digits", size=8)
    x, y = raw.pool.tensors
    cx, _ = clean.pool.tensors
    assert raw.pool_labels.equal(clean.pool_labels)
    assert raw.test.tensors[0].equal(clean.test.tensors[0])  # no cue at test
    agree = 0
    for i in range(len(y)):
        r, c = CUE_POSITIONS[int(y[i])]
        agree += bool((x[i, 0, r : r + 2, c : c + 2] == 1.0).all()) and not (cx[i, 0, r : r + 2, c : c + 2] == 1.0).all()
    assert 0.85 < agree / len(y) <= 0.95
    # the pool and the test set are disjoint and the split does not depend on anything but its seed
    assert len(raw.pool) + len(raw.test) == 1797
    assert split_fingerprint(split_pool(raw.pool_labels, 0.2, 0)[0]) == split_fingerprint(split_pool(raw.pool_labels, 0.2, 0)[0])


def test_random_mask_moves_the_mask_keeping_its_area():
    maps = torch.zeros(2, 8, 8)
    maps[:, 1:3, 2:6] = 1.0
    shifts = torch.tensor([[3, 1], [7, 5]])
    moved = train.roll_maps(maps, shifts)
    assert moved.sum((1, 2)).tolist() == maps.sum((1, 2)).tolist()
    assert moved[0, 4:6, 3:7].eq(1).all() and not moved[0].equal(maps[0])
    assert moved[1, 0:2, 7].eq(1).all() and moved[1, 0:2, 0:2].eq(1).all()  # wraps around


@pytest.mark.parametrize("kind", sorted(k for k in KINDS if train.arm_kind(k).refreshes and k not in ("salient-mix", "keep-cutout")))
def test_a_refresh_that_writes_no_map_leaves_the_batch_as_it_was(kind):
    """The thesis' rule maps nothing once the model fits its images (the RQ3 study's 600 images):
    every refreshing arm trains on, its batches untouched (the map-guided arms fall back to their
    map-free rule instead: test_the_map_guided_arms_capture_maps_and_fall_back_to_their_map_free_rule)."""
    from benchmarks.study.arms.base import Context

    images, labels = torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)
    pool = torch.utils.data.TensorDataset(images, labels)
    context = Context(pool, labels, (torch.arange(6), torch.arange(6, 8)), 0.25, torch.device("cpu"), lambda t: t, 0)
    arm = train.arm_kind(kind)({**train.arm_kind(kind).defaults, "name": kind, "kind": kind}, context)
    arm.attach(arm.make_dataset(torch.arange(6)))
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(2, 2))
    with torch.no_grad():  # a model that gets every image right: nothing is wrong, nothing is mapped
        model[-1].weight.zero_(), model[-1].bias.copy_(torch.tensor([1.0, 0.0]))
    arm.refresh(model)
    assert arm.ds.bank.resolution is None
    x = images[:4].clone()
    assert torch.equal(arm.apply(x, labels[:4], torch.arange(4), model), images[:4])


def test_keep_cut_avoids_the_salient_region():
    saliency = torch.zeros(16, 8, 8)
    saliency[:, :, :4] = 1.0  # the left half holds all the evidence
    x = torch.ones(16, 1, 8, 8)
    out, corner = train.keep_cut(x, saliency, 3, 10, torch.Generator().manual_seed(0))
    # accepted: less than an average region's share (9/64) of the saliency, so at most one
    # salient column of the hole's three; all would be salient anywhere left of column 2
    assert (corner[:, 1] >= 3).all() and (corner[:, 1] >= 4).any()
    assert out.eq(0).sum((1, 2, 3)).tolist() == [9] * 16
    assert out[:, :, :, :3].eq(1).all()


def test_small_image_stem_keeps_a_spatial_map():
    timm = pytest.importorskip("timm")
    model = train.build_model("resnet10t", 10, 1, size=32).eval()
    assert isinstance(model.maxpool, torch.nn.Identity)
    feats = model.forward_features(torch.rand(1, 1, 32, 32))
    assert feats.shape[-1] == 4  # 32 px / 8: stride-1 stem, no max-pool
    plain = timm.create_model("resnet10t", num_classes=10, in_chans=1).eval()
    assert plain.forward_features(torch.rand(1, 1, 32, 32)).shape[-1] == 1


def test_imagefolder_and_a_timm_model_run_through_the_harness(tmp_path):
    pytest.importorskip("timm")
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for c, name in enumerate(("cat", "dog", "fox")):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(12):
            pixels = (torch.rand(20, 24, 3, generator=g) * 80 + 60 * c).byte().numpy()
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
    data = load_data(f"imagefolder:{tmp_path / 'images'}", size=16, test_fraction=0.25)
    assert len(data.pool) == 27 and len(data.test) == 9 and data.num_classes == 3
    x, y = data.pool[0]
    assert x.shape == (3, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1
    out = tmp_path / "out"
    summary = train.main([
        "--datasets", f"imagefolder:{tmp_path / 'images'}", "--models", "resnet10t", "--seeds", "0",
        "--schedule", "1,p", "--size", "16", "--batch-size", "8", "--out", str(out),
    ])
    (group,) = summary.values()
    assert set(group["arms"]) == {"baseline", "proxy"}
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert [r["model"] for r in rows] == ["resnet10t", "resnet10t"] and all(r["epochs"] == "2" for r in rows)


class _Resumed(Exception):
    pass


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")  # copies into meta tensors are no-ops
@pytest.mark.parametrize("arm_name", ["proxy", "random-mask"])
def test_a_checkpoint_resumes_on_another_device(tmp_path, arm_name):
    # a CUDA resume crashed: torch.load(map_location=device) moved the RNG states off the CPU.
    # "meta" stands in for the device: the load path runs up to the "resumed" line.
    study = train.load_study("tiny", {"out": str(tmp_path), "seeds": [0]})
    (arm,) = [train.arm_settings(a, study) for a in study.arms if a["name"] == arm_name]
    data = load_data("shortcut-digits", study.size, study.root, study.test_fraction, study.split_seed, study.cue_strength)
    ckpt = str(tmp_path / "run.pt")

    def stop_after_two_epochs(line):
        if "epoch  2/" in line:
            raise KeyboardInterrupt

    rng = torch.get_rng_state()
    try:
        with pytest.raises(KeyboardInterrupt):
            train.train_run(study, data, "cnn", arm, 0, checkpoint=ckpt, log=stop_after_two_epochs)
        saved = torch.load(ckpt, weights_only=False)
        if arm_name == "random-mask":
            assert saved["arm"]["shifts"] is not None  # the refresh after epoch 2 drew them

        def stop_when_resumed(line):
            if line.startswith("resumed from"):
                raise _Resumed

        study.device = "meta"
        with pytest.raises(_Resumed):
            train.train_run(study, data, "cnn", arm, 0, checkpoint=ckpt, log=stop_when_resumed)
        assert torch.equal(torch.get_rng_state(), saved["rng"])
    finally:
        torch.set_rng_state(rng)
    state = train.load_checkpoint(ckpt)
    for key in ("rng", "sampler_gen"):
        assert state[key].device.type == "cpu" and state[key].dtype == torch.uint8
    assert state["arm"]["gen"].device.type == "cpu"


def test_the_accuracy_plot_shows_every_epoch_of_every_curve(tmp_path, monkeypatch):
    import matplotlib.figure

    def record(arm, kind, seed, curve):
        return {"dataset": "digits", "model": "cnn", "arm": arm, "kind": kind, "seed": seed, "test_acc": curve[-1],
                "val_acc": curve[-1], "wall_s": 1.0, "masked_area_mean": 0.0, "maps_final": 0, "settings": {},
                "test_acc_curve": curve, "rounds": []}

    records = [record("baseline", "none", s, [0.08 + s / 100, 0.4, 0.9, 0.96, 0.97]) for s in (0, 1)]
    records += [record("proxy", "proxy", s, [0.12, 0.5, 0.93, 0.97, 0.985 + s / 100]) for s in (0, 1)]
    study = train.Study(schedule="1,p,1,p,1")
    limits = {}
    save = matplotlib.figure.Figure.savefig

    def spy(fig, path, *args, **kwargs):
        limits[str(path)] = fig.axes[0].get_ylim()
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    train.plots(str(tmp_path), records, train.summarize(records), study)
    (lo, hi), = [v for k, v in limits.items() if "accuracy-" in k]
    assert lo <= 8.5 and hi >= 99.0  # the lowest mean (epoch 1 of the baseline) and the highest are inside
    assert lo >= 0 and hi <= 100


def test_an_arm_compared_with_a_control_it_names_is_compared_once():
    from benchmarks.study.stats import summarize

    def rec(arm, kind, seed, acc):
        return {"dataset": "d", "model": "m", "arm": arm, "kind": kind, "seed": seed, "test_acc": acc, "val_acc": acc,
                "wall_s": 1.0, "masked_area_mean": 0.0, "maps_final": 0, "settings": {}}

    records = [rec(a, k, s, 0.9 + 0.01 * s + d) for s in range(3)
               for a, k, d in (("baseline", "none", 0.0), ("proxy", "proxy", 0.01), ("random-mask", "random-mask", 0.0))]
    group = summarize(records, compare_with={"proxy": ["random-mask", "baseline"]})["d / m"]
    pairs = [(c["arm"], c["versus"]) for c in group["comparisons"]]
    assert sorted(pairs) == [("proxy", "baseline"), ("proxy", "random-mask"), ("random-mask", "baseline")]
    assert group["comparisons"][0]["mean"] == pytest.approx(0.01)


def test_proxy_grids_outline_the_replaced_region(tiny):
    from PIL import Image

    out, _, _ = tiny
    for arm in ("proxy", "random-mask"):
        with Image.open(out / "grids" / f"shortcut-digits-cnn-{arm}-seed0-refresh1.png") as im:
            pixels = torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8).view(im.size[1], im.size[0], 3).int()
        h, w, _ = pixels.shape
        assert w > 600 and h > 400  # a matplotlib figure: title, four columns, row labels, caption
        cyan = (pixels[..., 0] < 80) & (pixels[..., 1] > 200) & (pixels[..., 2] > 200)
        assert cyan.sum() > 20, arm  # the outline of the replaced region (what else the figure says: test_study_pictures.py)
