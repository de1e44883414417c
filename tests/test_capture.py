"""MapCapture: maps from the training step's own A and dL/dA, training left exactly as it was."""

import copy
import gc
import weakref

import kornia.augmentation as K
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import proxyaug as pa
from proxyaug.functional import normalize_maps

from .conftest import SmallCNN

N, B = 24, 8


def _data(seed=1, channels=3, size=16):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(N, channels, size, size, generator=g), torch.randint(0, 4, (N,), generator=g))


def _ds(**kw):
    return pa.ProxyDataset(_data(), dtype=torch.float32, **kw)


def _batches(ds, steps=3):
    x, y = ds.dataset.tensors
    for s in range(steps):
        idx = torch.arange(s * B, (s + 1) * B) % N
        yield x[idx], y[idx], idx


def _train(model, ds, capture=None, steps=3, accumulate=1, after_step=None):
    """SGD with momentum over ``steps`` batches; with ``capture``, each (micro-)batch in a capture step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for s, (x, y, idx) in enumerate(_batches(ds, steps)):
        for part in torch.arange(B).chunk(accumulate):
            ctx = capture.step(model) if capture is not None else torch.enable_grad()
            with ctx:
                logits = model(x[part])
                if capture is not None:
                    capture.observe(idx[part], logits, y[part])
                loss = nn.functional.cross_entropy(logits, y[part]) / accumulate
                loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step(s)
    return opt


def _explicit(model, layer, x, y, loss_scale=1.0):
    """Grad-CAM of the loss computed by hand: A and dL/dA of one training forward, then the formula."""
    rec = {}

    def hook(m, i, o):
        o.retain_grad()
        rec["a"] = o

    h = layer.register_forward_hook(hook)
    try:
        loss = nn.functional.cross_entropy(model(x), y) * loss_scale
        loss.backward()
    finally:
        h.remove()
    a, g = rec["a"].detach().float(), rec["a"].grad.float()
    cam = (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1).clamp_min(0)
    return _normalise(cam)


def _normalise(cam):
    """Divided by the maximum, then min-max: the scale of the loss cancels exactly."""
    return normalize_maps(cam / cam.amax(dim=(1, 2), keepdim=True))


# -- the maps ------------------------------------------------------------------------------------
def test_captured_maps_equal_maps_computed_explicitly_from_the_same_A_and_dLdA():
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    twin = copy.deepcopy(model)
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"), select="loss", budget=B)  # every sample of the batch
    x, y, idx = next(_batches(ds, 1))
    state = torch.get_rng_state()
    with capture.step(model):
        logits = model(x)
        capture.observe(idx, logits, y)
        nn.functional.cross_entropy(logits, y).backward()
    report = capture.commit()
    torch.set_rng_state(state)  # the same dropout draws
    expected = _explicit(twin.train(), twin.features[3], x, y)
    assert report.written == B and report.source == "capture" and report.layer == "features.3"
    maps, present = ds.bank.get(idx)
    assert present.all()
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=0)
    assert float(expected.amax()) > 0.99  # a real map, not zeros


def test_default_policy_maps_the_wrong_predictions_of_the_batch():
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    capture = pa.MapCapture(ds)  # layer found on the first step
    x, y, idx = next(_batches(ds, 1))
    with capture.step(model):
        logits = model(x)
        capture.observe(idx, logits, y)
        nn.functional.cross_entropy(logits, y).backward()
    wrong = idx[logits.argmax(1) != y]
    report = capture.commit()
    assert wrong.numel() and torch.equal(report.indices, wrong.sort().values)
    assert torch.equal(ds.bank.present.nonzero().flatten(), wrong.sort().values)
    assert report.layer == "features" and ds.refreshes == 1  # as refresh finds it


def test_epoch_staging_commits_once_and_keeps_a_samples_last_map():
    torch.manual_seed(0)
    model, ds, last_ds = SmallCNN(), _ds(), _ds()
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"), select="random", budget=N)
    last = pa.MapCapture(last_ds, spec=pa.MapSpec(layer="features.3"), select="random", budget=N)  # step 4 only
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for s, (x, y, idx) in enumerate(_batches(ds, 4)):  # 32 items over 24 samples: 0..7 in steps 1 and 4
        with capture.step(model), (last.step(model) if s == 3 else torch.enable_grad()):
            logits = model(x)
            capture.observe(idx, logits, y)
            if s == 3:
                last.observe(idx, logits, y)
            nn.functional.cross_entropy(logits, y).backward()
        opt.step()
        opt.zero_grad()
    assert capture.staged == 4 * B and not ds.bank.present.any() and ds.refreshes == 0
    report = capture.commit()
    assert report.scanned == N and report.written == N and ds.refreshes == 1 and capture.staged == 0
    last.commit()
    assert torch.equal(ds.bank.get(torch.arange(B))[0], last_ds.bank.get(torch.arange(B))[0])


def test_step_mode_commits_after_every_step():
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features"), commit="step", select="loss", budget=2)
    seen = []
    _train(model, ds, capture, steps=3, after_step=lambda s: seen.append(int(ds.bank.present.sum())))
    assert seen == [2, 4, 6] and ds.refreshes == 3 and capture.staged == 0


# -- training left as it was ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [{"spec": pa.MapSpec(layer="features.3")}, {"spec": pa.MapSpec(layer=None), "commit": "step"}, {"spec": pa.MapSpec(layer=["features.1", "features"])}],
)
def test_weights_after_n_steps_are_bit_identical_with_capture_on_and_off(kwargs):
    results = []
    for on in (False, True):
        torch.manual_seed(0)
        model, ds = SmallCNN(), _ds()
        capture = pa.MapCapture(ds, **kwargs) if on else None
        opt = _train(model, ds, capture, steps=4)
        if capture is not None and capture.staged:
            capture.commit()
        results.append((copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()["state"]), torch.get_rng_state()))
    (w0, o0, r0), (w1, o1, r1) = results
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)  # BN running stats included
    assert all(torch.equal(o0[k]["momentum_buffer"], o1[k]["momentum_buffer"]) for k in o0)
    assert torch.equal(r0, r1)  # dropout drew the same numbers


def test_gradient_accumulation_is_unchanged_and_each_micro_batch_is_captured():
    results = []
    for on in (False, True):
        torch.manual_seed(0)
        model, ds = SmallCNN(), _ds()
        capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"), select="random", budget=N) if on else None
        _train(model, ds, capture, steps=3, accumulate=2)
        results.append(model.state_dict())
        if on:
            assert capture.staged == 3 * B and capture.commit().written == N
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_hooks_are_removed_and_nothing_of_the_step_is_kept():
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"))
    x, y, idx = next(_batches(ds, 1))
    refs = {}

    def spy(m, i, o):
        refs["a"] = weakref.ref(o)
        o.register_hook(lambda g: refs.__setitem__("g", weakref.ref(g)))

    handle = model.features[3].register_forward_hook(spy)
    with capture.step(model):
        logits = model(x)
        capture.observe(idx, logits, y)
        nn.functional.cross_entropy(logits, y).backward()
    handle.remove()
    del logits
    gc.collect()
    assert refs["a"]() is None and refs["g"]() is None  # neither A nor dL/dA outlives the step
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is not None for p in model.parameters())  # the user's gradients, as without capture


def test_hooks_are_removed_on_error_and_the_next_step_works():
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"))
    x, y, idx = next(_batches(ds, 1))
    with pytest.raises(KeyError, match="boom"):
        with capture.step(model):
            model(x)
            raise KeyError("boom")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert capture.staged == 0
    with capture.step(model):
        logits = model(x)
        capture.observe(idx, logits, y)
        nn.functional.cross_entropy(logits, y).backward()
    assert capture.staged == B


def test_amp_and_grad_scaler_scale_cancels_and_overflowing_steps_write_nothing():
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    twin = copy.deepcopy(model)
    x, y, idx = next(_batches(ds, 1))
    model.drop.p = twin.drop.p = 0.0
    maps = []
    for m, scale in ((model, 2.0**16), (twin, None)):  # the same bf16 step, with and without a scaler
        d = _ds()
        capture = pa.MapCapture(d, spec=pa.MapSpec(layer="features.3"), select="loss", budget=B)
        with capture.step(m), torch.autocast("cpu", dtype=torch.bfloat16):
            logits = m(x)
            capture.observe(idx, logits, y)
            loss = nn.functional.cross_entropy(logits.float(), y)
            (torch.amp.GradScaler("cpu", init_scale=scale).scale(loss) if scale else loss).backward()
        capture.commit()
        maps.append(d.bank.get(idx)[0])
    torch.testing.assert_close(maps[0], maps[1], atol=1e-6, rtol=0)
    assert float(maps[0].amax()) > 0.99
    # a scale that overflows: inf gradients, the scaler skips the step, the capture writes nothing
    ds2 = _ds()
    overflow = torch.amp.GradScaler("cpu", init_scale=3e38)
    capture = pa.MapCapture(ds2, spec=pa.MapSpec(layer="features.3"), select="loss", budget=B)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = copy.deepcopy(model.state_dict())
    with capture.step(model):
        logits = model(x)
        capture.observe(idx, logits, y)
        opt.zero_grad()
        overflow.scale(nn.functional.cross_entropy(logits, y) * 10).backward()
    overflow.step(opt)
    report = capture.commit()
    assert report.skipped == B and report.written == 0 and not ds2.bank.present.any() and ds2.refreshes == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k)


def test_frozen_layers_up_to_the_target_still_give_maps_and_the_same_training():
    results, maps = [], []
    for on in (False, True):
        torch.manual_seed(0)
        model, ds = SmallCNN(), _ds()
        model.features.requires_grad_(False)  # the target layer and everything before it: no gradient stops at A
        capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"), select="random", budget=N) if on else None
        _train(model, ds, capture, steps=3)
        results.append(model.state_dict())
        if on:
            assert capture.commit().written == N
            maps.append(ds.bank.get(torch.arange(N))[0])
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
    assert float(maps[0].amax()) > 0.99
    # the same map as by hand, with A made a leaf that requires a gradient
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    model.features.requires_grad_(False)
    model.drop.p = 0.0
    twin = copy.deepcopy(model)
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"), select="loss", budget=B)
    x, y, idx = next(_batches(ds, 1))
    with capture.step(model):
        logits = model(x)
        capture.observe(idx, logits, y)
        nn.functional.cross_entropy(logits, y).backward()
    capture.commit()
    a = twin.features[:4](x).detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(twin.head(twin.pool(twin.features[4](a.clone())).flatten(1)), y)
    (g,) = torch.autograd.grad(loss, a)
    expected = _normalise((g.mean(dim=(2, 3), keepdim=True) * a.detach()).sum(1).clamp_min(0))
    torch.testing.assert_close(ds.bank.get(idx)[0], expected, atol=1e-6, rtol=0)


def test_no_grad_forward_inside_a_step_is_ignored():
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"))
    x, y, idx = next(_batches(ds, 1))
    with capture.step(model):
        with torch.no_grad():
            model(x)
    assert capture.staged == 0


# -- torch.compile -------------------------------------------------------------------------------
def test_compiled_model_runs_the_step_eagerly_with_the_same_maps():
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    model.drop.p = 0.0
    x, y, idx = next(_batches(ds, 1))
    compiled = torch.compile(model)
    compiled(x).sum().backward()  # compiled before any hook exists
    model.zero_grad()
    maps = []
    for m in (model, compiled):
        d = _ds()
        capture = pa.MapCapture(d, spec=pa.MapSpec(layer="features.3"), select="loss", budget=B)
        with capture.step(m):
            logits = m(x)
            capture.observe(idx, logits, y)
            nn.functional.cross_entropy(logits, y).backward()
        assert capture.commit().written == B
        maps.append(d.bank.get(idx)[0])
        model.zero_grad()
    torch.testing.assert_close(maps[0], maps[1], atol=1e-6, rtol=0)
    assert all(not m._forward_hooks for m in model.modules())


def test_a_compiled_function_that_skips_the_hooks_warns_and_writes_nothing():
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    x, y, idx = next(_batches(ds, 1))
    forward = torch.compile(lambda t: model(t))
    forward(x)  # compiled without hooks: the graph will not call the ones added later
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"))
    with pytest.warns(RuntimeWarning, match="did not run under the capture's hook"):
        with capture.step(model):
            logits = forward(x)
            capture.observe(idx, logits, y)
            nn.functional.cross_entropy(logits, y).backward()
    assert capture.staged == 0 and capture.commit().written == 0 and ds.refreshes == 0


# -- frames ---------------------------------------------------------------------------------------
def _two_frames(geometry):
    """The same step captured twice: in the frame the model saw, and brought back through ``geometry``."""
    torch.manual_seed(0)
    model = SmallCNN()
    model.drop.p = 0.0
    seen, canon = _ds(), _ds()
    raw = pa.MapCapture(seen, spec=pa.MapSpec(layer="features.3"), select="loss", budget=B)
    back = pa.MapCapture(canon, spec=pa.MapSpec(layer="features.3"), select="loss", budget=B, geometry=geometry)
    x, y, idx = next(_batches(seen, 1))
    with raw.step(model), back.step(model):
        logits = model(geometry(x))
        raw.observe(idx, logits, y)
        back.observe(idx, logits, y)
        nn.functional.cross_entropy(logits, y).backward()
    raw.commit(), back.commit()
    return seen.bank.get(idx)[0], canon.bank.get(idx)[0]


def _resampled(maps, size):
    up = nn.functional.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)
    return up


def test_a_flip_is_undone():
    geometry = K.AugmentationSequential(K.RandomHorizontalFlip(p=1.0))
    seen, canon = _two_frames(geometry)
    expected = normalize_maps(nn.functional.adaptive_avg_pool2d(_resampled(seen, (16, 16)).flip(-1), seen.shape[-2:])[:, 0])
    torch.testing.assert_close(canon, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(canon, seen, atol=1e-2)


def test_an_affine_is_undone():
    from kornia.geometry.transform import warp_affine

    geometry = K.AugmentationSequential(K.RandomAffine(degrees=30.0, translate=(0.2, 0.2), scale=(0.8, 1.2), p=1.0))
    seen, canon = _two_frames(geometry)
    # undone independently: the seen map at image size, warped by the inverse of the batch's matrices
    inverse = torch.linalg.inv(geometry.transform_matrix)[:, :2]
    back = warp_affine(_resampled(seen, (16, 16)), inverse, (16, 16), align_corners=False)
    expected = normalize_maps(nn.functional.adaptive_avg_pool2d(back, seen.shape[-2:])[:, 0])
    torch.testing.assert_close(canon, expected, atol=1e-4, rtol=0)
    assert (canon - seen).abs().amax() > 0.1


def test_geometry_that_cannot_be_inverted_is_refused():
    geometry = K.AugmentationSequential(K.RandomElasticTransform(p=1.0))
    with pytest.raises(ValueError, match="cannot be inverted"):
        _two_frames(geometry)
    with pytest.raises(TypeError, match="geometry must be a kornia.augmentation.AugmentationSequential"):
        pa.MapCapture(_ds(), geometry=K.RandomHorizontalFlip())


# -- errors ---------------------------------------------------------------------------------------
def test_bad_use_gets_errors_that_say_what_to_do():
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    x, y, idx = next(_batches(ds, 1))
    with pytest.raises(ValueError, match="method='scorecam' is not valid for capture"):
        pa.MapCapture(ds, spec=pa.MapSpec("scorecam"))
    with pytest.raises(ValueError, match="commit='batch' is not supported"):
        pa.MapCapture(ds, commit="batch")
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"))
    with pytest.raises(RuntimeError, match="belongs inside a capture.step"):
        capture.observe(idx, model(x), y)
    with pytest.raises(RuntimeError, match="never called capture.observe"):
        with capture.step(model):
            nn.functional.cross_entropy(model(x), y).backward()
    with pytest.raises(RuntimeError, match="no gradient reached the target layer"):
        with capture.step(model):
            capture.observe(idx, model(x), y)
    with pytest.raises(RuntimeError, match="do not nest"):
        with capture.step(model), capture.step(model):
            pass
    with pytest.raises(ValueError, match="idx"):
        with capture.step(model):
            capture.observe(torch.arange(3), model(x), y)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# -- Lightning ------------------------------------------------------------------------------------
def test_lightning_callback_commits_captured_maps_at_the_schedule(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from proxyaug.integrations.lightning import ProxyAttention

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = SmallCNN()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y, _ = batch
            logits = self(x)
            return {"loss": nn.functional.cross_entropy(logits, y), "logits": logits}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    ds = _ds()
    module = Module()
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="net.features.3"), select="random", budget=N)
    callback = ProxyAttention(ds, "1,p,1", capture=capture)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=str(tmp_path), callbacks=[callback])
    trainer.fit(module, torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True))
    assert len(callback.reports) == 1 and callback.reports[0].source == "capture" and callback.reports[0].written == N
    assert ds.bank.present.all() and ds.refreshes == 1
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


def test_the_how_to_runs():
    import pathlib
    import re

    page = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "howto" / "capture.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    namespace: dict = {}
    for code in blocks:  # the loop, then geometry: the second block reuses the first one's names
        exec(compile(code, "docs/howto/capture.md", "exec"), namespace)
    assert namespace["ds"].refreshes >= 3 and namespace["ds"].bank.present.any()


def test_a_target_layer_the_forward_never_calls_is_named():
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    model.unused = nn.Conv2d(3, 3, 1)
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer=["features.3", "unused"]))
    x, y, idx = next(_batches(ds, 1))
    with pytest.raises(ValueError, match=r"\['unused'\] were not called"):
        with capture.step(model):
            logits = model(x)
            capture.observe(idx, logits, y)
            nn.functional.cross_entropy(logits, y).backward()
    assert all(not m._forward_hooks for m in model.modules())
