"""proxyaug.metrics: hand-computed cases, the batched curves against a plain per-image loop, the
classes against the functions, the model left as found, ranks summed.

Tolerances: hand-computed cases and the loop comparisons hold to ``atol=1e-6`` (float32; the
batched forward and the per-image one may differ in the last bits), state round trips exactly.
"""

import copy

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import proxyaug as pa
from proxyaug import metrics as M


def _model(device="cpu") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)).to(device)


def _data(b=4, size=8, h=4, device="cpu"):
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 3, size, size, generator=g).to(device), torch.rand(b, h, h, generator=g).to(device)


@pytest.fixture
def atol(device):
    """1e-6 on the CPU; on CUDA a batched and a per-image forward may take other kernels (1e-5)."""
    return 1e-6 if device.type == "cpu" else 1e-5


# -- localisation -------------------------------------------------------------------------------

def test_energy_by_hand():
    maps = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    regions = torch.tensor([[[True, True], [False, False]], [[True, False], [False, False]]])
    # image 0: (1 + 2) / 10; image 1 has no mass: counts as uniform, 1 of 4 pixels
    assert torch.allclose(M.energy_in_region(maps, regions), torch.tensor([0.3, 0.25]), atol=1e-6)


def test_energy_resizes_maps_to_the_regions_and_accepts_channel_dims():
    maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    regions = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    regions[0, 0, :2, :2] = True
    up = F.interpolate(maps.unsqueeze(1), size=(4, 4), mode="bilinear", align_corners=False)[0, 0]
    expected = up[:2, :2].sum() / up.sum()
    assert torch.allclose(M.energy_in_region(maps.unsqueeze(1), regions), expected.view(1), atol=1e-6)


def test_pointing_game_by_hand_with_tolerance_and_ties():
    maps = torch.zeros(3, 5, 5)
    maps[0, 1, 1] = maps[1, 4, 4] = 1.0  # image 2: constant, ties resolve to pixel (0, 0)
    regions = torch.zeros(3, 5, 5, dtype=torch.bool)
    regions[0, 1, 1] = True
    regions[1, 2, 2] = True  # (4, 4) is at distance sqrt(8) ~ 2.83
    regions[2, 0, 0] = True
    assert M.pointing_game(maps, regions).tolist() == [True, False, True]
    assert M.pointing_game(maps, regions, tolerance=2).tolist() == [True, False, True]
    assert M.pointing_game(maps, regions, tolerance=3).tolist() == [True, True, True]


# -- concentration ------------------------------------------------------------------------------

def test_sparsity_and_entropy_by_hand():
    maps = torch.tensor([[[2.0, 2.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[4.0, 0.0], [0.0, 0.0]]])
    assert torch.allclose(M.sparsity(maps), torch.tensor([2.0, 1.0, 4.0]))
    expected = torch.tensor([torch.log(torch.tensor(2.0)), torch.log(torch.tensor(4.0)), 0.0])
    assert torch.allclose(M.entropy(maps), expected, atol=1e-6)
    assert torch.allclose(M.sparsity(maps * 7), M.sparsity(maps)) and torch.allclose(M.entropy(maps * 7), M.entropy(maps))


# -- faithfulness against a plain per-image loop ------------------------------------------------

def _loop_curve(model, x, maps, steps, baseline, insert, preprocess=None):
    """One image at a time, a Python sort and explicit pixel lists: the reference."""
    model.eval()
    pre = preprocess or (lambda t: t)
    out = []
    with torch.no_grad():
        for i in range(x.shape[0]):
            img = x[i : i + 1]
            H, W = img.shape[-2:]
            m = F.interpolate(maps[i][None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0].flatten().tolist()
            order = sorted(range(H * W), key=lambda p: (-m[p], p))
            base = {"zeros": torch.zeros_like(img), "mean": img.mean(dim=(2, 3), keepdim=True).expand_as(img).clone(),
                    "blur": pa.functional.gaussian_blur(img, pa.functional.default_blur_sigma((H, W)))}[baseline]
            t = int(model(pre(img)).argmax())
            curve = []
            for k in range(steps + 1):
                n = (k * H * W) // steps
                cur = base.clone() if insert else img.clone()
                src = img if insert else base
                for p in order[:n]:
                    cur[..., p // W, p % W] = src[..., p // W, p % W]
                curve.append(float(model(pre(cur)).softmax(1)[0, t]))
            out.append(curve)
    return torch.tensor(out)


@pytest.mark.parametrize("baseline", ["zeros", "blur", "mean"])
@pytest.mark.parametrize("insert", [False, True], ids=["deletion", "insertion"])
def test_curves_match_a_per_image_loop(baseline, insert, device, atol):
    model, (x, maps) = _model(device), _data(device=device)
    maps[0, 0, :2] = 0.5  # ties: broken by pixel index in both
    fn = M.insertion_curve if insert else M.deletion_curve
    got = fn(model, x, maps, steps=5, baseline=baseline)
    ref = _loop_curve(model, x, maps, 5, baseline, insert)
    assert got.shape == (4, 6)
    assert torch.allclose(got, ref, atol=atol)


def test_curves_with_preprocess_target_and_odd_step_counts(device, atol):
    model, (x, maps) = _model(device), _data(b=3, size=7, h=3, device=device)
    pre = lambda t: (t - 0.5) / 0.25
    got = M.deletion_curve(model, x, maps, steps=6, preprocess=pre)
    assert torch.allclose(got, _loop_curve(model, x, maps, 6, "zeros", False, pre), atol=atol)
    t = torch.tensor([0, 1, 2], device=device)
    probs = model.eval()(pre(x)).softmax(1)
    curve = M.insertion_curve(model, x, maps, steps=1, baseline="zeros", target=t, preprocess=pre)
    assert torch.allclose(curve[:, 1], probs[torch.arange(3, device=device), t], atol=atol)


def test_auc_is_trapezoidal_over_the_unit_interval():
    c = torch.tensor([[1.0, 0.0], [0.2, 0.4]])
    assert torch.allclose(M.auc(c), torch.tensor([0.5, 0.3]))
    c = torch.rand(3, 11)
    assert torch.allclose(M.auc(c), torch.trapezoid(c, torch.linspace(0, 1, 11), dim=1), atol=1e-6)


def test_average_drop_increase_by_hand(device, atol):
    model, (x, maps) = _model(device), _data(device=device)
    maps = maps / maps.amax(dim=(1, 2), keepdim=True)
    drop, inc = M.average_drop_increase(model, x, maps)
    model.eval()
    with torch.no_grad():
        p = model(x).softmax(1)
        t = p.argmax(1)
        up = F.interpolate(maps.unsqueeze(1), size=x.shape[-2:], mode="bilinear", align_corners=False)
        o = model(x * up).softmax(1)[torch.arange(4, device=device), t]
    y = p[torch.arange(4, device=device), t]
    assert torch.allclose(drop, (y - o).clamp_min(0) / y, atol=atol) and torch.equal(inc, o > y)


# -- the model as found -------------------------------------------------------------------------

@pytest.mark.parametrize("fn", ["deletion_curve", "insertion_curve", "average_drop_increase"])
def test_the_model_is_left_as_found(fn, device, atol):
    model, (x, maps) = _model(device), _data(device=device)
    model.train()
    model[1].eval()  # a frozen BatchNorm
    state = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    getattr(M, fn)(model, x, maps.clamp(0, 1))
    assert [m.training for m in model.modules()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BatchNorm statistics untouched


# -- the classes --------------------------------------------------------------------------------

def test_classes_average_the_functions_over_batches(device, atol):
    model, (x, maps) = _model(device), _data(b=6, device=device)
    maps = maps / maps.amax(dim=(1, 2), keepdim=True)
    regions = torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(2)).to(device) > 0.5
    cases = [
        (M.EnergyInRegion(), (maps, regions), M.energy_in_region(maps, regions)),
        (M.PointingGame(tolerance=1), (maps, regions), M.pointing_game(maps, regions, tolerance=1).float()),
        (M.Sparsity(), (maps,), M.sparsity(maps)),
        (M.Entropy(), (maps,), M.entropy(maps)),
        (M.DeletionAUC(model, steps=4), (x, maps), M.auc(M.deletion_curve(model, x, maps, steps=4))),
        (M.InsertionAUC(model, steps=4), (x, maps), M.auc(M.insertion_curve(model, x, maps, steps=4))),
    ]
    for metric, args, per_image in cases:
        metric.update(*(a[:4] for a in args))
        metric.update(*(a[4:] for a in args))
        assert torch.allclose(metric.compute(), per_image.mean(), atol=atol), type(metric).__name__
        restored = metric.clone()  # the same settings, a fresh state
        restored.reset()
        restored.load_state_dict(metric.state_dict())
        assert torch.equal(restored.compute(), metric.compute())
        metric.reset()
        with pytest.raises(RuntimeError, match="has no images to average; call update"):
            metric.compute()
    adi = M.AverageDropIncrease(model)
    adi.update(x[:3], maps[:3])
    adi.update(x[3:], maps[3:])
    drop, inc = M.average_drop_increase(model, x, maps)
    out = adi.compute()
    assert torch.allclose(out["average_drop"], drop.mean(), atol=atol) and torch.allclose(out["increase"], inc.float().mean())


def test_load_state_dict_of_another_metric_is_refused():
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "average_drop", "increase"(.|\n)*Unexpected key\(s\) in state_dict: "sparsity"'):
        M.AverageDropIncrease(_model()).load_state_dict(M.Sparsity().state_dict())
    with pytest.raises(ValueError, match=r"state holds count=a tensor of shape \(2,\).*; Sparsity keeps a 0-d tensor there"):
        M.Sparsity().load_state_dict({"sparsity": torch.zeros(()), "count": torch.zeros(2)})


def _classes(model):
    return {"energy": M.EnergyInRegion(), "pointing": M.PointingGame(tolerance=1), "sparsity": M.Sparsity(),
            "entropy": M.Entropy(), "deletion": M.DeletionAUC(model, steps=4), "insertion": M.InsertionAUC(model, steps=4),
            "drop": M.AverageDropIncrease(model)}


def test_classes_are_torchmetrics_metrics_in_a_collection_with_a_state_round_trip():
    from torchmetrics import Metric, MetricCollection

    model, (x, maps) = _model(), _data(b=6)
    maps = maps / maps.amax(dim=(1, 2), keepdim=True)
    regions = maps.repeat_interleave(2, 1).repeat_interleave(2, 2) > 0.5
    metrics = _classes(model)
    assert all(isinstance(m, Metric) for m in metrics.values()) and not hasattr(M, "MeanMetric")
    localisation = MetricCollection({"energy": metrics["energy"], "pointing": metrics["pointing"]})  # compute groups on
    localisation.update(maps[:3], regions[:3])
    localisation.update(maps[3:], regions[3:])
    out = localisation.compute()  # compute groups match states by name: two classes never share theirs
    assert torch.allclose(out["energy"], M.energy_in_region(maps, regions).mean(), atol=1e-6)
    assert torch.allclose(out["pointing"], M.pointing_game(maps, regions, tolerance=1).float().mean(), atol=1e-6)
    concentration = MetricCollection([metrics["sparsity"], metrics["entropy"]])
    concentration.update(maps)
    out = concentration.compute()
    assert torch.allclose(out["Sparsity"], M.sparsity(maps).mean(), atol=1e-6) and torch.allclose(out["Entropy"], M.entropy(maps).mean(), atol=1e-6)
    # the model-based ones share update(x, maps): one collection, AverageDropIncrease's dict flattened
    model_based = MetricCollection({k: metrics[k] for k in ("deletion", "insertion", "drop")})
    model_based.update(x, maps)
    values = model_based.compute()
    drop, inc = M.average_drop_increase(model, x, maps)
    assert torch.allclose(values["deletion"], M.auc(M.deletion_curve(model, x, maps, steps=4)).mean(), atol=1e-6)
    assert torch.allclose(values["average_drop"], drop.mean(), atol=1e-6) and torch.allclose(values["increase"], inc.float().mean())
    # state_dict round trip into fresh instances; the model is no state and no submodule
    saved = {name: m.state_dict() for name, m in metrics.items() if m.update_count}
    assert set(saved["drop"]) == {"average_drop", "increase", "count"} and not list(metrics["drop"].children())
    fresh = _classes(model)
    for name, state in saved.items():
        fresh[name].load_state_dict(state)
        a, b = fresh[name].compute(), metrics[name].compute()
        assert (a == b) if not isinstance(a, dict) else all(torch.equal(a[k], b[k]) for k in a), name


def test_update_makes_no_host_to_device_copy(monkeypatch):
    """Defect 6: ``update`` built the image count as ``torch.tensor(float(B), device=...)``, a blocking copy on CUDA."""
    made, moves = [], []
    tensor, to = torch.tensor, torch.Tensor.to

    def spy_tensor(*args, **kwargs):
        made.append(kwargs.get("device"))
        return tensor(*args, **kwargs)

    def spy_to(self, *args, **kwargs):  # the copies fixture's spy, counting only moves between devices
        out = to(self, *args, **kwargs)
        if out.device != self.device:
            moves.append(kwargs.get("non_blocking", False))
        return out

    metrics = [M.Sparsity(validate_args=False).to("meta"), M.Entropy(validate_args=False).to("meta")]
    monkeypatch.setattr(torch, "tensor", spy_tensor)
    monkeypatch.setattr(torch.Tensor, "to", spy_to)
    maps = torch.rand(3, 4, 4, device="meta")  # "meta" stands in for "cuda"
    for metric in metrics:
        metric.update(maps)
        metric.update(maps)
    assert not [d for d in made if d is not None and torch.device(d).type != "cpu"], "update built a device tensor from a Python number"
    assert all(moves), "a host-to-device copy in update() was blocking"
    assert all(m.count.device.type == "meta" for m in metrics)


def test_update_runs_without_a_host_sync(no_host_sync, device):
    maps = torch.rand(4, 3, 3, device=device)
    regions = torch.rand(4, 3, 3, device=device) > 0.5
    energy, sparsity = M.EnergyInRegion(validate_args=False).to(device), M.Sparsity(validate_args=False).to(device)
    with no_host_sync():
        for _ in range(2):
            energy.update(maps, regions)
            sparsity.update(maps)
    assert torch.allclose(sparsity.compute(), M.sparsity(maps).mean())


def _compare_on_ranks(rank: int) -> dict:
    """The comparison classes (tests/test_metrics_compare.py) on unequal shares of one batch, and the functions on all of it."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(12, generator=g) < 0.6, torch.rand(12, generator=g) < 0.5
    maps_a, maps_b = torch.rand(6, 3, 3, generator=g), torch.rand(6, 3, 3, generator=g)
    x, y = torch.rand(4, 3, 4, 4, generator=g), torch.randint(0, 2, (4,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    share, trials, images = (slice(0, 4), slice(0, 8), slice(0, 3)) if rank == 0 else (slice(4, 6), slice(8, 12), slice(3, 4))
    consistency, spearman = M.ErrorConsistency(), M.MapSpearman()
    occlusion = M.OcclusionCurve(model, patch=2, fractions=(0.0, 0.5, 1.0))
    local = M.ErrorConsistency(sync_on_compute=False)
    consistency.update(a[trials], b[trials])
    local.update(a[trials], b[trials])
    spearman.update(maps_a[share], maps_b[share])
    occlusion.update(x[images], y[images], order=x[images, 0])
    whole = M.occlusion_curve(model, x, y, patch=2, fractions=(0.0, 0.5, 1.0), order=x[:, 0]).float().mean(0)
    return {"kappa": (consistency.compute(), M.error_consistency(a, b)), "local_kappa": local.compute(),
            "spearman": (spearman.compute(), M.map_spearman(maps_a, maps_b).mean()), "occlusion": (occlusion.compute(), whole)}


def _worker(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        metric = M.Sparsity()
        if rank == 0:  # rank 1 sees no batch and still takes part in compute()
            metric.update(torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]))
        else:
            metric.update(torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]))
        from torchmetrics import MetricCollection

        both = MetricCollection({"energy": M.EnergyInRegion(), "local": M.EnergyInRegion(sync_on_compute=False)})
        maps = torch.tensor([[[3.0, 1.0]]]) if rank == 0 else torch.tensor([[[1.0, 1.0]], [[1.0, 1.0]]])
        both.update(maps, torch.tensor([[[True, False]]]).expand(maps.shape[0], 1, 2))
        torch.save({"sparsity": metric.compute(), **both.compute(), **_compare_on_ranks(rank)}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_compute_sums_over_ranks(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"{rank}.pt")
        assert torch.allclose(got["sparsity"], torch.tensor((4.0 + 1.0 + 2.0) / 3))
        # torchmetrics' own sync: a collection sums over ranks too; sync_on_compute=False keeps this rank's
        assert torch.allclose(got["energy"], torch.tensor((0.75 + 0.5 + 0.5) / 3))
        assert torch.allclose(got["local"], torch.tensor(0.75 if rank == 0 else 0.5))
        for name in ("kappa", "spearman", "occlusion"):  # the comparison classes: every rank's share, not its own
            synced, whole = got[name]
            assert torch.allclose(synced, whole, atol=1e-6), name
        assert not torch.allclose(got["local_kappa"], got["kappa"][1])  # a rank's own share tells another kappa


def test_metrics_run_on_the_maps_device_and_agree_with_the_cpu(device):
    model, (x, maps) = _model(device), _data(device=device)
    regions = maps > 0.5
    regions[:, 0, 0] = True
    assert M.energy_in_region(maps, regions).device.type == device.type
    assert M.pointing_game(maps, regions, tolerance=1).device.type == device.type
    cpu = M.deletion_curve(_model(), x.cpu(), maps.cpu(), steps=4, baseline="blur")
    here = M.deletion_curve(model, x, maps, steps=4, baseline="blur")
    assert here.device.type == device.type and torch.allclose(here.cpu(), cpu, atol=1e-4)
    metric = M.AverageDropIncrease(model)
    metric.update(x, maps.clamp(0, 1))
    assert metric.compute()["average_drop"].device.type == device.type


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_curves_under_autocast_stay_close_to_float32(device, dtype):
    model, (x, maps) = _model(device), _data(device=device)
    expect = M.deletion_curve(model, x, maps, steps=4)
    with torch.autocast(device.type, dtype=dtype):
        got = M.deletion_curve(model, x, maps, steps=4)
    assert got.dtype == torch.float32 and torch.allclose(got, expect, atol=2e-2)


def test_the_how_to_examples_run(capsys):
    import pathlib
    import re

    page = pathlib.Path(__file__).resolve().parent.parent / "docs" / "howto" / "metrics.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert len(blocks) == 2
    exec(compile("\n".join(blocks), str(page), "exec"), {})
    out = capsys.readouterr().out
    assert "deletion AUC" in out and "'drop': {'average_drop': tensor(" in out


def test_validate_args_false_gives_the_same_values_and_classes_pickle():
    import pickle

    model, (x, maps) = _model(), _data()
    maps = maps / maps.amax(dim=(1, 2), keepdim=True)
    regions = maps.repeat_interleave(2, 1).repeat_interleave(2, 2) > 0.5
    for fn, args in [(M.energy_in_region, (maps, regions)), (M.pointing_game, (maps, regions)), (M.sparsity, (maps,)),
                     (M.entropy, (maps,)), (M.deletion_curve, (model, x, maps)), (M.insertion_curve, (model, x, maps))]:
        assert torch.equal(fn(*args, validate_args=False), fn(*args)), fn.__name__
    assert all(torch.equal(a, b) for a, b in zip(M.average_drop_increase(model, x, maps, validate_args=False),
                                                 M.average_drop_increase(model, x, maps)))
    metric = M.DeletionAUC(model, steps=4)
    metric.update(x, maps.unsqueeze(1))  # (B, 1, h, w) maps are accepted
    again = pickle.loads(pickle.dumps(metric))
    assert torch.equal(again.compute(), metric.compute())


def test_a_collection_never_merges_metrics_whose_settings_differ():
    """torchmetrics' compute groups merge metrics whose states are equal after the first update; settings
    are not states, so two PointingGames with other tolerances (or curves of other models) would be computed
    as one."""
    from torchmetrics import MetricCollection

    maps = torch.zeros(1, 3, 3)
    maps[0, 0, 0] = 1.0
    hit = torch.zeros(1, 3, 3, dtype=torch.bool)
    hit[0, 0, 0] = True
    near = torch.zeros(1, 3, 3, dtype=torch.bool)
    near[0, 0, 1] = True
    collection = MetricCollection({"t0": pa.metrics.PointingGame(tolerance=0), "t1": pa.metrics.PointingGame(tolerance=1),
                                   "again": pa.metrics.PointingGame(tolerance=0)})
    collection.update(maps, hit)  # every metric scores 1: equal states
    collection.update(maps, near)
    out = collection.compute()
    assert (float(out["t0"]), float(out["t1"]), float(out["again"])) == (0.5, 1.0, 0.5)
    groups = sorted(sorted(g) for g in collection.compute_groups.values())
    assert groups == [["again", "t0"], ["t1"]]  # the same settings may still share one computation
    model, other = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    a, b = pa.metrics.DeletionAUC(model, steps=2), pa.metrics.DeletionAUC(other, steps=2)
    assert not torch.equal(a.settings, b.settings) and "settings" not in a.state_dict()
