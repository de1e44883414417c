"""proxyaug.metrics' comparisons of two models (issue 25): map agreement against scipy and a plain
per-image loop, occlusion and shuffle robustness against a per-image loop and a recording model,
error consistency against its formula and torchmetrics, the classes against the functions (over
batches, in a collection), the model left as found, bad inputs named. The sums over two ranks are
checked in ``tests/test_metrics.py``'s two-rank run, which these classes share to spawn once.

Tolerances: Spearman and the kappas hold to ``atol=1e-5`` (float32 against scipy's float64);
right / wrong flags and top-k sets compare exactly.
"""

import copy
import math
import pathlib
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from proxyaug import metrics as M


def _model(device="cpu") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)).to(device)


def _batch(b=6, size=8, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, size, size, generator=g) * 0.9 + 0.1  # no pixel is 0: a dropped one is told apart
    return x.to(device), torch.randint(0, 5, (b,), generator=g).to(device)


def _up(maps, size):
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


class Recorder(nn.Module):
    """A classifier that keeps every batch it is shown."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.inner(x)


# -- agreement ----------------------------------------------------------------------------------

def test_spearman_matches_scipy_per_image_with_ties_and_two_resolutions(device):
    st = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (6, 8, 8), generator=g).float()  # many ties, already on the common grid
    b = torch.rand(6, 4, 4, generator=g)
    b[1, :2] = 0.25  # ties in b too
    got = M.map_spearman(a.to(device), b.to(device))
    assert got.shape == (6,) and got.device.type == device.type
    ref = [st.spearmanr(a[i].flatten().numpy(), _up(b, (8, 8))[i].flatten().numpy()).statistic for i in range(6)]
    assert torch.allclose(got.cpu(), torch.tensor(ref, dtype=torch.float32), atol=1e-5)


def test_spearman_of_a_constant_map_is_zero_as_torchmetrics_gives():
    from torchmetrics.functional.regression import spearman_corrcoef

    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(4, 5, 5, generator=g), torch.rand(4, 5, 5, generator=g)
    a[0] = 0.0  # an all-zero CAM
    b[2] = 0.3  # a constant one of another value: its bilinear copy may not be exactly constant
    got = M.map_spearman(a, b, size=7)
    assert got[0] == 0 and got[2] == 0 and (got[[1, 3]] != 0).all()
    ref = spearman_corrcoef(_up(a, (7, 7)).flatten(1).T, _up(b, (7, 7)).flatten(1).T)
    assert torch.allclose(got[[0, 1, 3]], ref[[0, 1, 3]], atol=1e-5)


def test_agreement_by_hand():
    a = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]).repeat(3, 1, 1)
    b = torch.stack([a[0] * 10 + 3, a[0].exp(), -a[0]])  # monotone, monotone, reversed
    assert M.map_spearman(a, b).tolist() == [1.0, 1.0, -1.0]
    assert M.topk_iou(a, a, fraction=0.5).tolist() == [1.0, 1.0, 1.0]
    assert M.topk_iou(a, b, fraction=0.5).tolist() == [1.0, 1.0, 0.0]  # the top 3 of -a are a's bottom 3
    # 1 of 6 kept (round(0.6) = 1): a's top is pixel 5; b2's top is pixel 0
    assert M.topk_iou(a, b, fraction=0.1).tolist() == [1.0, 1.0, 0.0]


def _loop_topk_iou(a, b, fraction):
    out = []
    for i in range(a.shape[0]):
        va, vb = a[i].flatten().tolist(), b[i].flatten().tolist()
        n = len(va)
        k = max(1, math.floor(fraction * n + 0.5))
        ta = set(sorted(range(n), key=lambda p: (-va[p], p))[:k])
        tb = set(sorted(range(n), key=lambda p: (-vb[p], p))[:k])
        out.append(len(ta & tb) / len(ta | tb))
    return torch.tensor(out)


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 0.5, 1.0])
def test_topk_iou_matches_a_per_image_loop_with_ties_broken_by_position(fraction, device):
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 3, (8, 6, 6), generator=g).float()  # ties decide most of the top
    b = torch.rand(8, 3, 3, generator=g)
    got = M.topk_iou(a.to(device), b.to(device), fraction=fraction)
    assert torch.equal(got.cpu(), _loop_topk_iou(a, _up(b, (6, 6)), fraction))
    assert torch.equal(M.topk_iou(a, a.clone(), fraction=fraction), torch.ones(8))


def test_size_chooses_the_common_grid():
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(3, 6, 6, generator=g), torch.rand(3, 1, 3, 3, generator=g)  # (B, 1, h, w) is accepted
    down = M.map_spearman(a, b, size=(2, 2))
    assert torch.allclose(down, M.map_spearman(_up(a, (2, 2)), _up(b[:, 0], (2, 2))), atol=1e-6)
    assert torch.equal(M.topk_iou(a, b, size=4), M.topk_iou(_up(a, (4, 4)), _up(b[:, 0], (4, 4))))
    assert not torch.allclose(down, M.map_spearman(a, b))  # the default, 6 x 6, is another grid


# -- occlusion ----------------------------------------------------------------------------------

def _loop_occlusion(model, x, labels, maps, patch, fractions):
    """One image at a time: the patches' mass summed in Python, sorted by (-mass, index), dropped one by one."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(x.shape[0]):
            H, W = x.shape[-2:]
            m = _up(maps[i : i + 1], (H, W))[0]
            cells = [(r, c) for r in range(H // patch) for c in range(W // patch)]
            mass = [sum(float(m[r * patch + u, c * patch + v]) for u in range(patch) for v in range(patch)) for r, c in cells]
            order = sorted(range(len(cells)), key=lambda j: (-mass[j], j))
            row = []
            for f in fractions:
                img = x[i : i + 1].clone()
                for j in order[: math.floor(f * len(cells) + 0.5)]:
                    r, c = cells[j]
                    img[..., r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = 0.0
                row.append(bool(model(img).argmax(1) == labels[i]))
            out.append(row)
    return torch.tensor(out)


def test_salient_first_occlusion_matches_a_per_image_loop(device):
    model, (x, y) = _model(device), _batch(device=device)
    maps = torch.rand(6, 4, 4, generator=torch.Generator().manual_seed(5))
    maps[:, :2] = 0.0  # the top patch row has no mass at all: four tied patches, dropped last, by index
    fractions = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
    got = M.occlusion_curve(model, x, y, patch=2, fractions=fractions, order=maps.to(device))
    assert got.shape == (6, 7) and got.dtype == torch.bool and got.device.type == device.type
    assert torch.equal(got.cpu(), _loop_occlusion(model.cpu(), x.cpu(), y.cpu(), maps, 2, fractions))
    chunked = M.occlusion_curve(model, x, y, patch=2, fractions=fractions, order=maps.to(device), batch_size=4)
    assert torch.equal(chunked, got)


def test_fraction_zero_is_the_clean_accuracy_and_the_defaults_are_naseers():
    model, (x, y) = _model(), _batch(b=8)
    curve = M.occlusion_curve(model, x, y, patch=4)
    assert M.DROP_FRACTIONS == tuple(k / 10 for k in range(10)) and curve.shape == (8, 10)
    with torch.no_grad():
        clean = model.eval()(x).argmax(1) == y
    assert torch.equal(curve[:, 0], clean)


def _dropped_patches(seen, original, patch):
    """Per image, the set of patches that hold only zeros; and whether every other patch is untouched."""
    b, c, h, w = original.shape

    def cells(t):
        return t.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), -1)

    s, o = cells(seen), cells(original)
    zero, same = (s == 0).all(dim=2), (s == o).all(dim=2)
    return [set(torch.nonzero(row).flatten().tolist()) for row in zero], bool((zero | same).all())


def test_random_order_drops_nested_uniform_sets_and_replays_with_a_generator():
    x, y = _batch(b=5)
    fractions = (0.0, 0.25, 0.5, 0.75)
    rec = Recorder(_model())
    first = M.occlusion_curve(rec, x, y, patch=2, fractions=fractions, generator=torch.Generator().manual_seed(7))
    assert len(rec.seen) == 4 and torch.equal(rec.seen[0], x)
    previous = [set() for _ in range(5)]
    for f, seen in zip(fractions, rec.seen):
        dropped, untouched = _dropped_patches(seen, x, 2)
        assert untouched and all(len(d) == round(f * 16) for d in dropped)
        assert all(p <= d for p, d in zip(previous, dropped))  # a higher fraction drops a superset
        previous = dropped
    assert len({frozenset(d) for d in previous}) > 1  # each image draws its own order
    again = Recorder(_model())
    assert torch.equal(M.occlusion_curve(again, x, y, patch=2, fractions=fractions, generator=torch.Generator().manual_seed(7)), first)
    assert all(torch.equal(a, b) for a, b in zip(rec.seen, again.seen))
    other = Recorder(_model())
    M.occlusion_curve(other, x, y, patch=2, fractions=fractions, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(other.seen[2], rec.seen[2])


class Bright(nn.Module):
    """Class 1 when any pixel is bright: the object is all it looks at."""

    def forward(self, x):
        s = x.flatten(1).amax(dim=1)
        return torch.stack([0.5 - s, s - 0.5], dim=1)


def test_salient_first_with_a_map_of_the_object_drops_accuracy_faster_than_random():
    b, g = 32, torch.Generator().manual_seed(9)
    x = torch.zeros(b, 3, 16, 16)
    maps = torch.zeros(b, 4, 4)
    for i, (r, c) in enumerate(torch.randint(0, 3, (b, 2), generator=g).tolist()):
        x[i, :, r * 4 : r * 4 + 4, c * 4 : c * 4 + 8] = 1.0  # the object fills 2 of the 16 patches
        maps[i, r, c : c + 2] = 1.0
    y = torch.ones(b, dtype=torch.long)
    salient = M.occlusion_curve(Bright(), x, y, patch=4, order=maps).float().mean(0)
    random = M.occlusion_curve(Bright(), x, y, patch=4, generator=torch.Generator().manual_seed(0)).float().mean(0)
    assert salient[0] == 1 and random[0] == 1
    assert salient[1:].eq(0).all()  # 10 % of 16 patches rounds to 2: the object is gone
    assert random[1] > 0.5 and M.auc(salient) < M.auc(random) - 0.2


# -- shuffle ------------------------------------------------------------------------------------

def _tiles(img, g):
    c, h, w = img.shape
    return [img[:, r * h // g : (r + 1) * h // g, s * w // g : (s + 1) * w // g] for r in range(g) for s in range(g)]


def test_shuffle_permutes_each_images_tiles_and_replays_with_a_generator():
    x, y = _batch(b=4)
    rec = Recorder(_model())
    correct = M.shuffle_accuracy(rec, x, y, grids=(1, 2, 4), generator=torch.Generator().manual_seed(3))
    assert correct.shape == (4, 3) and torch.equal(rec.seen[0], x)
    for g, seen in zip((2, 4), rec.seen[1:]):
        for i in range(4):
            src, out = _tiles(x[i], g), _tiles(seen[i], g)
            match = [next(j for j, t in enumerate(src) if torch.equal(t, o)) for o in out]
            assert sorted(match) == list(range(g * g))  # every tile once: a permutation
        assert not torch.equal(seen, x)
    with torch.no_grad():
        expect = torch.stack([rec.inner.eval()(s).argmax(1) == y for s in rec.seen], dim=1)
    assert torch.equal(correct, expect)
    again = Recorder(_model())
    M.shuffle_accuracy(again, x, y, grids=(1, 2, 4), generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(rec.seen, again.seen))


def test_shuffle_leaves_a_pooling_model_right_and_hurts_one_that_reads_position():
    b = 12
    x = torch.zeros(b, 1, 8, 8)
    x[:, :, :4, :4] = 1.0  # the object in the top-left quadrant
    y = torch.ones(b, dtype=torch.long)
    pooled = Bright()  # reads no position
    corner = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        corner[1].weight.zero_()
        corner[1].bias.copy_(torch.tensor([0.5, 0.0]))
        corner[1].weight[1, 0] = 1.0  # class 1 only if pixel (0, 0) is bright
    gen = torch.Generator().manual_seed(0)
    assert M.shuffle_accuracy(pooled, x, y, grids=(2, 4), generator=gen).all()
    moved = M.shuffle_accuracy(corner, x, y, grids=(1, 2, 4), generator=torch.Generator().manual_seed(0)).float().mean(0)
    assert moved[0] == 1 and moved[1] < 0.6 and moved[2] < 0.6


# -- the model as found -------------------------------------------------------------------------

class Raises(nn.Module):
    """Flips its own flags and then fails, on the second forward."""

    def __init__(self):
        super().__init__()
        self.inner, self.calls = _model(), 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 2:
            self.inner[0].weight.requires_grad_(False)
            self.inner[0].weight.grad = torch.ones_like(self.inner[0].weight)
            self.inner.train()
            raise RuntimeError("boom")
        return self.inner(x)


@pytest.mark.parametrize("fn", ["occlusion_curve", "shuffle_accuracy"])
def test_the_model_is_left_as_found_also_when_it_raises(fn):
    x, y = _batch()
    kwargs = dict(patch=2) if fn == "occlusion_curve" else dict(grids=(1, 2))
    model = _model()
    model.train()
    model[1].eval()  # a frozen BatchNorm
    model[0].bias.requires_grad_(False)  # a frozen parameter
    state = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    getattr(M, fn)(model, x, y, **kwargs)
    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == [True, False] + [True] * 4
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BatchNorm statistics untouched
    raising = Raises()
    raising.inner[1].eval()
    flags = [m.training for m in raising.modules()]
    with pytest.raises(RuntimeError, match="boom"):
        getattr(M, fn)(raising, x, y, **kwargs)
    assert raising.calls == 2 and [m.training for m in raising.modules()] == flags
    assert raising.inner[0].weight.requires_grad and raising.inner[0].weight.grad is None


# -- error consistency --------------------------------------------------------------------------

def _kappa(a, b):
    """Geirhos et al.'s formula in plain Python."""
    n = len(a)
    p_a, p_b = sum(a) / n, sum(b) / n
    c_obs = sum(u == v for u, v in zip(a, b)) / n
    c_exp = p_a * p_b + (1 - p_a) * (1 - p_b)
    return (c_obs - c_exp) / (1 - c_exp)


def test_error_consistency_is_geirhos_kappa_and_torchmetrics_binary_cohen_kappa(device):
    from torchmetrics.classification import BinaryCohenKappa

    g = torch.Generator().manual_seed(0)
    for p_a, p_b in [(0.7, 0.4), (0.9, 0.9), (0.2, 0.5)]:
        a = torch.rand(200, generator=g) < p_a
        b = torch.where(torch.rand(200, generator=g) < 0.5, a, torch.rand(200, generator=g) < p_b)  # partly shared
        got = M.error_consistency(a.to(device), b.to(device))
        assert got.shape == () and got.device.type == device.type
        assert math.isclose(float(got), _kappa(a.tolist(), b.tolist()), abs_tol=1e-5)
        assert torch.equal(got.cpu(), BinaryCohenKappa()(a.long(), b.long()))
    sklearn = pytest.importorskip("sklearn.metrics")
    assert math.isclose(float(M.error_consistency(a, b)), sklearn.cohen_kappa_score(a.numpy(), b.numpy()), abs_tol=1e-5)


def test_error_consistency_by_hand_and_its_degenerate_case():
    a = torch.rand(50, generator=torch.Generator().manual_seed(1)) < 0.6
    assert float(M.error_consistency(a, a)) == 1.0  # a model against itself
    p_a = float(a.float().mean())
    c_exp = 2 * p_a * (1 - p_a)  # never agreeing: c_obs = 0, and -1 only at p = 0.5
    assert math.isclose(float(M.error_consistency(a, ~a)), -c_exp / (1 - c_exp), abs_tol=1e-6)
    half = torch.tensor([True, False] * 5)
    assert float(M.error_consistency(half, ~half)) == -1.0
    ones = torch.ones(6, dtype=torch.bool)
    assert torch.isnan(M.error_consistency(ones, ones)) and torch.isnan(M.error_consistency(~ones, ~ones))
    assert float(M.error_consistency(ones, a[:6])) == 0.0  # one always right: c_obs = c_exp = p_b


def test_independent_errors_give_kappa_near_zero():
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(20000, generator=g) < 0.7, torch.rand(20000, generator=g) < 0.6
    assert abs(float(M.error_consistency(a, b))) < 0.03
    shared = torch.where(torch.rand(20000, generator=g) < 0.5, a, b)  # half the trials copy a
    assert float(M.error_consistency(a, shared)) > 0.4


# -- the classes --------------------------------------------------------------------------------

def test_classes_accumulate_the_functions_over_batches(device):
    model, (x, y) = _model(device), _batch(b=8, device=device)
    g = torch.Generator().manual_seed(6)
    a, b = torch.rand(8, 4, 4, generator=g).to(device), torch.rand(8, 2, 2, generator=g).to(device)
    cases = [
        (M.MapSpearman(), (a, b), M.map_spearman(a, b).mean()),
        (M.TopKIoU(fraction=0.25, size=4), (a, b), M.topk_iou(a, b, fraction=0.25, size=4).mean()),
        (M.OcclusionCurve(model, patch=2), (x, y, a), M.occlusion_curve(model, x, y, patch=2, order=a).float().mean(0)),
    ]
    for metric, args, expect in cases:
        metric = metric.to(device)
        metric.update(*(t[:3] for t in args))
        metric.update(*(t[3:] for t in args))
        assert torch.allclose(metric.compute(), expect.to(torch.float32), atol=1e-6), type(metric).__name__
        restored = metric.clone()
        restored.reset()
        restored.load_state_dict(metric.state_dict())
        assert torch.equal(restored.compute(), metric.compute())
    # random draws: the class draws batch after batch from its generator, as two calls would
    occlusion = M.OcclusionCurve(model, patch=2, generator=torch.Generator().manual_seed(1)).to(device)
    shuffle = M.ShuffleAccuracy(model, grids=(2, 4), generator=torch.Generator().manual_seed(1)).to(device)
    gen_o, gen_s = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    parts_o, parts_s = [], []
    for part in (slice(0, 5), slice(5, 8)):
        occlusion.update(x[part], y[part])
        shuffle.update(x[part], y[part])
        parts_o.append(M.occlusion_curve(model, x[part], y[part], patch=2, generator=gen_o))
        parts_s.append(M.shuffle_accuracy(model, x[part], y[part], grids=(2, 4), generator=gen_s))
    assert torch.equal(occlusion.compute(), torch.cat(parts_o).float().mean(0))
    assert torch.equal(shuffle.compute(), torch.cat(parts_s).float().mean(0))
    consistency = M.ErrorConsistency().to(device)
    ca, cb = parts_o[0][:, 0], parts_o[0][:, 5]
    consistency.update(ca[:2], cb[:2])
    consistency.update(ca[2:], cb[2:])
    assert torch.allclose(consistency.compute(), M.error_consistency(ca, cb), equal_nan=True)


def test_classes_refuse_compute_before_update_and_a_foreign_state():
    with pytest.raises(RuntimeError, match=r"MapSpearman.compute\(\) has no images to average"):
        M.MapSpearman().compute()
    with pytest.raises(RuntimeError, match=r"ErrorConsistency.compute\(\) has no trials; call update\(\)"):
        M.ErrorConsistency().compute()
    metric = M.OcclusionCurve(_model(), fractions=(0.0, 0.5))
    with pytest.raises(ValueError, match=r"state holds accuracy=a tensor of shape \(10,\).*; OcclusionCurve keeps a tensor of shape \(2,\) there"):
        metric.load_state_dict(M.OcclusionCurve(_model()).state_dict())


def test_a_collection_keeps_classes_with_other_settings_apart():
    from torchmetrics import MetricCollection

    model, (x, y) = _model(), _batch(b=4)
    maps = torch.rand(4, 4, 4, generator=torch.Generator().manual_seed(0))
    collection = MetricCollection({"p2": M.OcclusionCurve(model, patch=2, fractions=(0.0, 1.0)),
                                   "p4": M.OcclusionCurve(model, patch=4, fractions=(0.0, 1.0)),
                                   "again": M.OcclusionCurve(model, patch=2, fractions=(0.0, 1.0))})
    collection.update(x, y, maps)
    collection.update(x, y, maps)
    out = collection.compute()
    assert torch.equal(out["p2"], M.occlusion_curve(model, x, y, patch=2, fractions=(0.0, 1.0), order=maps).float().mean(0))
    assert sorted(sorted(g) for g in collection.compute_groups.values()) == [["again", "p2"], ["p4"]]
    agreement = MetricCollection([M.MapSpearman(), M.TopKIoU(fraction=0.5)])
    agreement.update(maps, maps.flip(-1))
    assert set(agreement.compute()) == {"MapSpearman", "TopKIoU"}


def test_updates_run_without_a_host_sync(no_host_sync, device):
    a, b = torch.rand(4, 4, 4, device=device), torch.rand(4, 2, 2, device=device)
    metrics = [M.MapSpearman(validate_args=False).to(device), M.TopKIoU(validate_args=False).to(device)]
    with no_host_sync():
        for metric in metrics:
            metric.update(a, b)
    assert torch.allclose(metrics[0].compute(), M.map_spearman(a, b).mean())


# -- bad inputs ---------------------------------------------------------------------------------

_x, _y = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
BAD = [
    (lambda: M.map_spearman(torch.rand(2, 4, 4), torch.rand(3, 4, 4)), ValueError, r"a holds 2 maps but b holds 3; expected one map of each per image"),
    (lambda: M.map_spearman([[0.0]], torch.rand(1, 2, 2)), TypeError, r"a must be a tensor of shape \(B, h, w\); got a list"),
    (lambda: M.topk_iou(torch.rand(1, 2, 2), torch.rand(1, 2)), ValueError, r"b must have shape \(B, h, w\) or \(B, 1, h, w\); got shape \(1, 2\)"),
    (lambda: M.topk_iou(torch.rand(1, 2, 2), torch.rand(1, 2, 2), fraction=0), ValueError, r"fraction=0.0 is out of range; expected a number in \(0, 1\]"),
    (lambda: M.map_spearman(torch.rand(1, 2, 2), torch.rand(1, 2, 2), size=(0, 3)), ValueError, r"size=\(0, 3\) is not valid; expected None"),
    (lambda: M.map_spearman(torch.rand(1, 2, 2), torch.full((1, 2, 2), float("nan"))), ValueError, r"b contain NaN or inf in image\(s\) \[0\]"),
    (lambda: M.occlusion_curve(_model(), _x, _y, patch=3), ValueError, r"patch=3 does not divide the images' size 8 x 8; expected a patch that divides both \(their common divisors: \[1, 2, 4, 8\]\)"),
    (lambda: M.occlusion_curve(_model(), _x, _y, patch=2, fractions=(0.1, 1.5)), ValueError, r"fractions=\(0.1, 1.5\) is not valid; expected a non-empty tuple of numbers in \[0, 1\]"),
    (lambda: M.occlusion_curve(_model(), _x, _y, patch=2, order="salient"), ValueError, r"order='salient' is not supported; expected one of 'random'"),
    (lambda: M.occlusion_curve(_model(), _x, _y, patch=2, order=torch.rand(3, 2, 2)), ValueError, r"order holds 3 maps on cpu but images holds 2 images on cpu"),
    (lambda: M.occlusion_curve(_model(), _x, _y, patch=2, order=5), TypeError, r"order must be 'random' or maps \(B, h, w\)"),
    (lambda: M.occlusion_curve(_model(), _x, _y.float(), patch=2), ValueError, r"labels must be 2 integer class indices, one per image"),
    (lambda: M.occlusion_curve(_model(), _x, torch.tensor([0, 9]), patch=2), ValueError, r"labels hold classes in \[0, 9\] but the model has 5 outputs; expected \[0, 4\]"),
    (lambda: M.occlusion_curve(_model(), _x, _y, patch=2, generator=0), TypeError, r"generator must be a torch.Generator or None; got a int"),
    (lambda: M.occlusion_curve(_model(), _x, _y, patch=2, fill="black"), TypeError, r"fill must be a number"),
    (lambda: M.occlusion_curve(_model(), _x, _y, patch=2, batch_size=0), ValueError, r"batch_size=0 is not valid; expected a positive integer"),
    (lambda: M.occlusion_curve(_model(), _x[0], _y, patch=2), ValueError, r"images must have shape \(B, C, H, W\)"),
    (lambda: M.shuffle_accuracy(_model(), _x, _y, grids=(2, 3)), ValueError, r"grids=\(2, 3\) holds 3, which does not divide the images' size 8 x 8"),
    (lambda: M.shuffle_accuracy(_model(), _x, _y, grids=(0,)), ValueError, r"grids=\(0,\) is not valid; expected a non-empty tuple of grid sizes"),
    (lambda: M.error_consistency(torch.ones(3), torch.ones(3, dtype=torch.bool)), TypeError, r"correct_a must be a bool tensor of right / wrong flags; got dtype torch.float32"),
    (lambda: M.error_consistency(torch.ones(3, dtype=torch.bool), torch.ones(3, 2, dtype=torch.bool)), ValueError, r"correct_b must have shape \(N,\): one flag per trial; got shape \(3, 2\)"),
    (lambda: M.error_consistency(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool)), ValueError, r"correct_a holds 3 flags and correct_b 4; expected the same trials"),
    (lambda: M.ErrorConsistency().update(torch.ones(3, dtype=torch.bool), torch.ones(2, dtype=torch.bool)), ValueError, r"correct_a holds 3 flags on cpu and correct_b 2 on cpu"),
]


@pytest.mark.parametrize("call, exc, match", BAD, ids=[re.sub(r"\W+", " ", m)[:50] for _, _, m in BAD])
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_validate_args_false_gives_the_same_values():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 4, 4, generator=g), torch.rand(3, 2, 2, generator=g)
    assert torch.equal(M.map_spearman(a, b, validate_args=False), M.map_spearman(a, b))
    assert torch.equal(M.topk_iou(a, b, validate_args=False), M.topk_iou(a, b))
    model, (x, y) = _model(), _batch(b=3)
    assert torch.equal(M.occlusion_curve(model, x, y, patch=2, order=a, validate_args=False),
                       M.occlusion_curve(model, x, y, patch=2, order=a))


def test_the_how_to_example_runs(capsys):
    page = pathlib.Path(__file__).resolve().parent.parent / "docs" / "howto" / "compare.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert len(blocks) == 2
    exec(compile("\n".join(blocks), str(page), "exec"), {})
    out = capsys.readouterr().out
    assert "spearman" in out and "error consistency" in out and "occlusion AUC" in out
