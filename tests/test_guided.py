"""Map-guided augmentations fed by the bank (proxyaug/guided.py, proxyaug/mixing.py): each rule against
a per-image reference written from its paper's reference code (SaliencyMix's box, Attentive
CutMix's cells, CutMix's labels, SnapMix's label weights, KeepAugment's selective cut), the map-free
fallback, labels that sum to one, replay with a generator, every call form (v2.Compose, a loader's
(x, y, idx), dicts), one compiled graph, and bad inputs named."""

import math

import pytest
import torch

import proxyaug as pa
from proxyaug import mixing as X

v2 = pytest.importorskip("torchvision.transforms.v2")


def _bank(device="cpu", present=(0, 1, 2, 3), seed=0):
    bank = pa.MaskBank(6, resolution=(4, 4), device=device)
    rows = torch.tensor(present, dtype=torch.long)
    if len(rows):
        bank.put(rows, torch.rand(len(rows), 4, 4, generator=torch.Generator().manual_seed(seed)).to(device))
    return bank


def _batch(device="cpu"):
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)).to(device)
    return x, torch.tensor([0, 1, 2, 3]).to(device), torch.tensor([0, 1, 2, 3])


def _params(lam=0.6, centres=((3, 4), (10, 2), (15, 15), (0, 7))):
    return {"lam": torch.tensor(lam), "centres": torch.tensor(centres)}


def _reference_box(cy, cx, lam, H, W):
    """CutMix's rand_bbox / SaliencyMix's saliency_bbox around (cy, cx), per image, in Python."""
    cut_h, cut_w = int(H * math.sqrt(1.0 - lam)), int(W * math.sqrt(1.0 - lam))
    y1, y2 = min(max(cy - cut_h // 2, 0), H), min(max(cy + cut_h // 2, 0), H)
    x1, x2 = min(max(cx - cut_w // 2, 0), W), min(max(cx + cut_w // 2, 0), W)
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y1:y2, x1:x2] = True
    return m


def _full(bank, rows, size=(16, 16)):
    return pa.functional.upsample_maps(bank.get(torch.tensor(rows))[0], size)[:, 0]


@pytest.mark.parametrize("box", ["peak", "topk", "random"])
def test_each_box_rule_pastes_where_its_paper_says(box):
    bank, (x, y, idx) = _bank(), _batch()
    out, soft = pa.SalientMix(bank, 4, box=box)(x, y, idx, params=_params())[:2]
    full, low = _full(bank, [3, 0, 1, 2]), bank.get(torch.tensor([3, 0, 1, 2]))[0]  # each image's source: the batch rolled by one
    for i in range(4):
        if box == "peak":  # SaliencyMix: the box around the source's most salient pixel
            flat = int(full[i].argmax())
            want = _reference_box(flat // 16, flat % 16, 0.6, 16, 16)
        elif box == "topk":  # Attentive CutMix: the source's top cells, k = round((1 - lam) * cells)
            k = round(0.4 * 16)
            top = set(sorted(range(16), key=lambda c: (-float(low[i].flatten()[c]), c))[:k])
            want = torch.tensor([[(r // 4) * 4 + (c // 4) in top for c in range(16)] for r in range(16)])
        else:
            cy, cx = _params()["centres"][i].tolist()
            want = _reference_box(cy, cx, 0.6, 16, 16)
        src = x[(i - 1) % 4]
        torch.testing.assert_close(out[i], torch.where(want, src, x[i]))
        area = float(want.float().mean())  # labels by area: CutMix's lam adjusted to the box, summing to one
        torch.testing.assert_close(soft[i], (1 - area) * torch.eye(4)[y[i]] + area * torch.eye(4)[y[(i - 1) % 4]])
        assert float(soft[i].sum()) == pytest.approx(1.0)


def test_mass_labels_follow_snapmix():
    bank, (x, y, idx) = _bank(), _batch()
    out, soft, _ = pa.SalientMix(bank, 4, box="random", labels="mass")(x, y, idx, params=_params())
    own, src = _full(bank, [0, 1, 2, 3]), _full(bank, [3, 0, 1, 2])
    for i in range(4):
        cy, cx = _params()["centres"][i].tolist()
        box = _reference_box(cy, cx, 0.6, 16, 16)
        w_own = 1 - float(own[i][box].sum() / own[i].sum())  # SnapMix: the image's CAM mass it keeps ...
        w_src = float(src[i][box].sum() / src[i].sum())  # ... and the source's CAM mass pasted
        torch.testing.assert_close(soft[i], w_own * torch.eye(4)[y[i]] + w_src * torch.eye(4)[y[(i - 1) % 4]], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(soft.sum(1), torch.ones(4))  # SnapMix's weights need not sum to one


@pytest.mark.parametrize("box", ["peak", "topk"])
@pytest.mark.parametrize("labels", ["area", "mass"])
def test_samples_without_a_map_fall_back_to_the_random_box_and_area_labels(box, labels):
    x, y, idx = _batch()
    random = pa.SalientMix(_bank(present=()), 4, box="random")(x, y, idx, params=_params())
    for bank in (_bank(present=()), pa.MaskBank(6)):  # an empty bank, and one that never received a map
        got = pa.SalientMix(bank, 4, box=box, labels=labels)(x, y, idx, params=_params())
        assert torch.equal(got[0], random[0]) and torch.allclose(got[1], random[1])
    partial = _bank(present=(1,))  # only image 1 has a map: image 2 (its target) is guided, the others fall back
    got = pa.SalientMix(partial, 4, box=box, labels="area")(x, y, idx, params=_params())
    assert torch.equal(got[0][[0, 1, 3]], random[0][[0, 1, 3]])


def test_keep_cutout_keeps_the_evidence_and_falls_back_to_cutout():
    bank = pa.MaskBank(2, resolution=(4, 4))
    evidence = torch.zeros(1, 4, 4)
    evidence[0, :, :2] = 1.0  # the left half holds the evidence
    bank.put(torch.tensor([0]), evidence)
    cut = pa.KeepCutout(bank, size=4, tries=6)
    x = torch.ones(2, 1, 16, 16)
    params = cut.forward_parameters(x.shape, generator=torch.Generator().manual_seed(3))
    out = cut.replace(x, torch.tensor([0, 1]), params=params)
    c = params["candidates"]
    holes = [(out[i, 0] == 0).nonzero() for i in range(2)]
    assert all(len(h) == 16 for h in holes)
    first_right = int((c[0, :, 1] >= 8).float().argmax())  # KeepAugment: the first candidate below an average region's share
    assert holes[0][:, 1].min() >= 6 and tuple(holes[0].min(0).values.tolist()) == tuple(c[0, first_right, :2].tolist())
    assert tuple(holes[1].min(0).values.tolist()) == tuple(c[1, 0, :2].tolist())  # no map: Cutout's first hole
    assert torch.equal(pa.KeepCutout(bank, size=4, p=0.0).replace(x, torch.tensor([0, 1])), x)


@pytest.mark.parametrize("make", [lambda b: pa.SalientMix(b, 4, box="peak", alpha=0.5), lambda b: pa.KeepCutout(b, size=0.25)], ids=["mix", "cutout"])
def test_draws_replay_with_a_generator(make):
    bank, (x, y, idx) = _bank(), _batch()
    t = make(bank)
    args = (x, y, idx)
    one = t(*args, params=t.forward_parameters(x.shape, generator=torch.Generator().manual_seed(5)))
    two = t(*args, params=t.forward_parameters(x.shape, generator=torch.Generator().manual_seed(5)))
    three = t(*args, params=t.forward_parameters(x.shape, generator=torch.Generator().manual_seed(6)))
    assert all(torch.equal(a, b) for a, b in zip(one, two)) and not torch.equal(one[0], three[0])


def test_every_call_form_gives_back_its_structure():
    bank, (x, y, idx) = _bank(), _batch()
    mix, cut = pa.SalientMix(bank, 4), pa.KeepCutout(bank)
    params, cparams = _params(), cut.forward_parameters(x.shape, generator=torch.Generator().manual_seed(0))
    ref_x, ref_y = mix.mix(x, y, idx, params=params)
    for out in (mix(x, y, idx, params=params), mix((x, y, idx), params=params)):
        assert isinstance(out, tuple) and torch.equal(out[0], ref_x) and torch.equal(out[1], ref_y) and out[2] is idx
    listed = mix([x, y, idx], params=params)
    assert isinstance(listed, list) and torch.equal(listed[1], ref_y)
    for key in ("label", "labels"):
        d = mix({"image": x, key: y, "idx": idx, "path": "a"}, params=params)
        assert torch.equal(d["image"], ref_x) and torch.equal(d[key], ref_y) and d["path"] == "a"
    composed = v2.Compose([mix, v2.Identity()])  # v2.Compose unpacks several inputs into each transform
    out = composed(x, y, idx)
    assert out[0].shape == x.shape and out[1].shape == (4, 4) and out[2] is idx
    ds = pa.ProxyDataset(torch.utils.data.TensorDataset(x, y))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))  # a loader's (x, y, idx)
    assert [t.shape for t in mix(batch)] == [x.shape, (4, 4), (4,)]
    assert torch.equal(cut(x, idx, params=cparams)[0], cut.replace(x, idx, params=cparams))
    assert cut(x, y, idx, params=cparams)[1] is y
    one_hot = torch.nn.functional.one_hot(y, 4).float()  # soft labels in, soft labels out
    torch.testing.assert_close(mix(x, one_hot, idx, params=params)[1], ref_y)


@pytest.mark.parametrize("make", [lambda b: pa.SalientMix(b, 4, box="peak", labels="mass"), lambda b: pa.SalientMix(b, 4, box="topk"),
                                  lambda b: pa.KeepCutout(b, size=4)], ids=["peak-mass", "topk", "cutout"])
def test_each_transform_is_one_compiled_graph_and_follows_the_bank_across_devices(make, device):
    torch._dynamo.reset()
    bank = _bank(device)
    x, y, idx = _batch(device)
    t = make(bank)
    params = t.forward_parameters(x.shape, generator=torch.Generator().manual_seed(0), device=device)
    inputs = (x, y, idx) if isinstance(t, pa.SalientMix) else (x, idx)
    explain = torch._dynamo.explain(t)(*inputs, params=params)
    assert (explain.graph_count, explain.graph_break_count) == (1, 0), [str(b.reason) for b in explain.break_reasons]
    eager = t(*inputs, params=params)
    compiled = torch.compile(t, backend="aot_eager")(*inputs, params=params)
    assert all(torch.equal(a, b) for a, b in zip(eager, compiled))
    torch._dynamo.reset()
    moved = t.to("meta")
    assert moved.bank is bank and bank.device.type == "meta"


def test_bad_inputs_are_named():
    bank, (x, y, idx) = _bank(), _batch()
    with pytest.raises(ValueError, match="num_classes=0"):
        pa.SalientMix(bank, 0)
    with pytest.raises(ValueError, match="box='corner'"):
        pa.SalientMix(bank, 4, box="corner")
    with pytest.raises(ValueError, match="labels='soft'"):
        pa.SalientMix(bank, 4, labels="soft")
    with pytest.raises(ValueError, match="alpha=-1"):
        pa.SalientMix(bank, 4, alpha=-1)
    with pytest.raises(TypeError, match="bank must be a proxyaug.MaskBank"):
        pa.SalientMix(torch.zeros(3), 4)
    mix = pa.SalientMix(bank, 4)
    with pytest.raises(ValueError, match=r"y holds classes in \[1, 7\]"):
        mix(x, y * 2 + 1, idx)
    with pytest.raises(ValueError, match=r"y must hold class indices \(B,\) or soft labels \(B, 4\)"):
        mix(x, torch.zeros(4, 3), idx)
    with pytest.raises(TypeError, match="the images, their labels and their idx"):
        mix(x, idx)
    with pytest.raises(KeyError, match="'label'"):
        mix({"image": x, "idx": idx})
    with pytest.raises(IndexError, match="idx"):
        mix(x, y, torch.tensor([0, 1, 2, 9]))
    with pytest.raises(TypeError, match="params must be the dict"):
        mix(x, y, idx, params={"lam": 0.5})
    with pytest.raises(ValueError, match="size=1.5"):
        pa.KeepCutout(bank, size=1.5)
    with pytest.raises(ValueError, match="tries=0"):
        pa.KeepCutout(bank, tries=0)
    with pytest.raises(ValueError, match="tau=0.0"):
        pa.KeepCutout(bank, tau=0.0)
    with pytest.raises(ValueError, match="batch_shape=4"):
        mix.forward_parameters(4)


def test_kernels_on_hand_cases():
    m = torch.zeros(2, 8, 8)
    m[0, 6, 1] = 1.0
    m[1, 0, 7] = 1.0
    assert X.peak_centres(m).tolist() == [[6, 1], [0, 7]]
    boxes = X.boxes_at(X.peak_centres(m), X.cut_size(torch.tensor(0.75), 8, 8), (8, 8))
    assert boxes.tolist() == [[4, 0, 8, 3], [0, 5, 2, 8]]  # clipped at the edges
    masks = X.box_masks(boxes, (8, 8))
    assert masks.sum((1, 2)).tolist() == [12, 6]
    own, src = X.area_weights(masks)
    torch.testing.assert_close(own + src, torch.ones(2))
    assert X.mass_in(m, masks).tolist() == [1.0, 1.0]
