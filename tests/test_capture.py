"""MapCapture: maps from the training step's own A and dL/dA, training left exactly as it was."""

import copy
import gc
import math
import weakref

import kornia.augmentation as K
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import proxyaug as pa
from proxyaug.attention.methods import EIGEN, NATIVE_METHODS
from proxyaug.functional import normalize_maps

from .conftest import SharedBlock, SmallCNN

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


def _explicit(model, layer, x, y, loss_scale=1.0, method="gradcam"):
    """Grad-CAM (or Grad-CAM++) of the loss computed by hand: A and dL/dA of one training forward, then the formula."""
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
    if method == "gradcam++":  # Eq. 19 of Chattopadhay et al., on each image's gradient scaled to max |g| = 1
        g = g / g.abs().amax(dim=(1, 2, 3), keepdim=True)
        alpha = g**2 / (2 * g**2 + a.sum(dim=(2, 3), keepdim=True) * g**3 + 1e-6)
        weights = (g.clamp_min(0) * torch.where(g != 0, alpha, 0.0)).sum(dim=(2, 3), keepdim=True)
    else:
        weights = g.mean(dim=(2, 3), keepdim=True)
    cam = (weights * a).sum(dim=1).clamp_min(0)
    return _normalise(cam)


def _normalise(cam):
    """Divided by the maximum, then min-max: the scale of the loss cancels exactly."""
    return normalize_maps(cam / cam.amax(dim=(1, 2), keepdim=True))


# -- the maps ------------------------------------------------------------------------------------
def test_captured_maps_equal_maps_computed_explicitly_from_the_same_A_and_dLdA():
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    twin = copy.deepcopy(model)
    capture = pa.MapCapture(ds, spec=pa.MapSpec("gradcam", layer="features.3"), select="loss", budget=B)  # every sample of the batch
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


def test_the_default_method_is_grad_cam_plus_plus_of_the_loss():
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    model.drop.p = 0.0
    twin = copy.deepcopy(model)
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"), select="loss", budget=B)
    assert capture.spec.name == pa.MapCapture(ds).spec.name == pa.MapSpec().name == "gradcam++"
    x, y, idx = next(_batches(ds, 1))
    with capture.step(model):
        logits = model(x)
        capture.observe(idx, logits, y)
        nn.functional.cross_entropy(logits, y).backward()
    assert capture.commit().method == "gradcam++"
    expected = _explicit(twin.train(), twin.features[3], x, y, method="gradcam++")
    torch.testing.assert_close(ds.bank.get(idx)[0], expected, atol=1e-6, rtol=0)
    assert not torch.allclose(expected, _explicit(twin, twin.features[3], x, y), atol=1e-2)  # not Grad-CAM


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
    capture = pa.MapCapture(ds, spec=pa.MapSpec("gradcam", layer="features.3"), select="loss", budget=B)
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
    """From torch 2.6 by set_stance("force_eager"); before it by pointing the compiled module's forward at the original's."""
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
    if not hasattr(torch.compiler, "set_stance"):  # torch < 2.6: dynamo traces the function again, with the hooks
        with capture.step(model):
            logits = forward(x)
            capture.observe(idx, logits, y)
            nn.functional.cross_entropy(logits, y).backward()
        assert capture.staged == x.shape[0]
        return
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
    with pytest.raises(ValueError, match="method='rollout' is not valid for capture"):  # needs no pytorch-grad-cam
        pa.MapCapture(ds, spec=pa.MapSpec("rollout"))
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError:
        pass
    else:
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


# -- what a captured map describes: the canonical image --------------------------------------------
def _plain():
    """A fixed, deterministic CNN: no BatchNorm or Dropout, so train mode and batch composition change nothing."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


def _epochs(ds, capture, proxy, epochs, model=None):
    """Capture and commit for ``epochs`` shuffled epochs on a fixed model, the proxy transform before it:
    each sample's map after every commit (``None`` where it has none), and each commit's chosen samples."""
    model = model or _plain()
    sampler = pa.ProxySampler(ds, shuffle=True, seed=0)  # the live items (proxies="append"), shuffled
    loader = DataLoader(ds, batch_size=B, sampler=sampler)
    history, chosen = [], []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y, idx in loader:
            with capture.step(model):
                logits = model(proxy.replace(x, idx))
                capture.observe(idx, logits, y)
                nn.functional.cross_entropy(logits, y).backward()
            model.zero_grad()  # no optimizer step: the model stays fixed
        chosen.append(capture.commit().indices)
        maps, present = ds.bank.get(ds.rows(torch.arange(N)))
        history.append([m.clone() if p else None for m, p in zip(maps, present)])
    return history, chosen


@pytest.mark.parametrize("proxies", ["replace", "append"])
@pytest.mark.parametrize("mode", pa.functional.MODES)
def test_a_samples_map_stays_put_on_a_fixed_model_whatever_the_mode(mode, proxies):
    ds = pa.ProxyDataset(_data(), dtype=torch.float32, proxies=proxies)
    proxy = pa.ProxyTransform(ds.bank, mode=mode, threshold=0.5)
    # half of the considered samples per commit, at random: samples are mapped again in later epochs
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="2"), select="random", budget=N // 2)
    history, chosen = _epochs(ds, capture, proxy, epochs=4)
    first = {}
    for epoch in history:
        for s, m in enumerate(epoch):
            if m is None:
                continue
            first.setdefault(s, m)
            torch.testing.assert_close(m, first[s], atol=1e-6, rtol=0, msg=lambda e: f"sample {s}'s map moved: {e}")
    again = torch.cat(chosen).bincount().gt(1).sum()  # samples whose map was computed more than once
    if proxies == "replace":  # a mapped sample is shown as its proxy: never mapped again
        assert len(first) == N and again == 0
    else:  # its original is shown too: mapped again from it
        assert again >= N // 4
    assert all(float(m.amax()) > 0.99 for m in first.values())


def test_views_all_maps_the_proxy_image_which_moves_a_black_masked_map():
    maps = {}
    for views in ("canonical", "all"):
        ds = pa.ProxyDataset(_data(), dtype=torch.float32)
        proxy = pa.ProxyTransform(ds.bank, mode="black", threshold=0.5)
        capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="2"), select="random", budget=N, views=views)
        maps[views] = _epochs(ds, capture, proxy, epochs=3)[0]
    moved = [max(float((e[s] - maps["all"][0][s]).abs().max()) for e in maps["all"][1:]) for s in range(N)]
    assert max(moved) > 0.5  # the map of the masked image is another map: what 0.1 did
    assert all(torch.equal(e[s], maps["canonical"][0][s]) for e in maps["canonical"] for s in range(N))


def test_a_sample_shown_as_its_proxy_is_not_counted_and_keeps_its_map_and_its_mistake():
    ds = pa.ProxyDataset(_data(), dtype=torch.float32)
    model, proxy = _plain(), pa.ProxyTransform(ds.bank, mode="black", threshold=0.5)
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="2"), select="random", budget=N, reset=True)
    x, y, idx = next(_batches(ds, 1))
    for _ in range(2):  # the first commit maps the batch; the second step shows every one as its proxy
        with capture.step(model):
            logits = model(proxy.replace(x, idx))
            capture.observe(idx, logits, y)
            nn.functional.cross_entropy(logits, y).backward()
        if not ds.bank.present.any():
            assert capture.staged == B and capture.commit().written == B
    before = ds.bank.state_dict()
    assert capture.staged == 0 and capture.state_dict()["rows"].numel() == 0
    report = capture.commit()
    assert report.scanned == 0 and report.dropped == 0 and ds.refreshes == 1  # nothing considered: nothing counted
    assert all(torch.equal(v, ds.bank.state_dict()[k]) for k, v in before.items())  # reset=True dropped nothing
    wrong = idx[logits.argmax(1) != y]
    assert torch.equal(ds.observed_wrong, wrong.sort().values)  # not used up by a commit that did not consider them


def test_reset_drops_the_considered_samples_that_were_not_chosen_and_says_so():
    ds = pa.ProxyDataset(_data(), dtype=torch.float32)
    ds.bank.put(torch.arange(N), torch.full((N, 8, 8), 0.5))  # every sample has an earlier map
    model = _plain()
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="2"), select="loss", budget=2, reset=True, views="all")
    x, y, idx = next(_batches(ds, 1))  # considers samples 0..7, chooses 2
    with capture.step(model):
        logits = model(x)
        capture.observe(idx, logits, y)
        nn.functional.cross_entropy(logits, y).backward()
    report = capture.commit()
    assert report.written == 2 and report.dropped == B - 2
    present = ds.bank.present
    assert present[B:].all() and int(present[:B].sum()) == 2  # samples not considered keep their maps
    assert torch.equal(ds.bank.get(torch.arange(B, N))[0], torch.full((N - B, 8, 8), 0.5))
    assert "reset dropped 6 earlier maps" in str(report)


def test_a_report_says_when_reset_dropped_maps_instead_of_the_bank_is_unchanged():
    kw = dict(scanned=8, wrong=0, chosen=0, written=0, seconds=0.0, scan_seconds=0.0, attention_seconds=0.0,
              method="gradcam++", layer="2", indices=torch.empty(0, dtype=torch.long), source="capture")
    assert str(pa.RefreshReport(**kw)).endswith("the bank is unchanged (0.00 s)")
    assert "reset dropped 3 earlier maps (0.00 s)" in str(pa.RefreshReport(**kw, dropped=3))
    assert "unchanged" not in str(pa.RefreshReport(**kw, dropped=1))
    # a capture whose commit chose nothing, with reset=True: the maps of the considered samples are gone
    ds = pa.ProxyDataset(_data(), dtype=torch.float32)
    model = _plain()
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="2"), reset=True, views="all")  # wrong ones only
    x, y, idx = next(_batches(ds, 1))
    with torch.no_grad():
        right = model(x).argmax(1)  # labels the model gets right: nothing is wrong, nothing chosen
    ds.bank.put(idx, torch.full((B, 8, 8), 0.5))
    with capture.step(model):
        logits = model(x)
        capture.observe(idx, logits, right)
        nn.functional.cross_entropy(logits, right).backward()
    report = capture.commit()
    assert report.wrong == report.chosen == 0 and not ds.bank.present.any()
    assert str(report).endswith(f"reset dropped {B} earlier maps ({report.seconds:.2f} s)") and "unchanged" not in str(report)


# -- any positive factor of the loss cancels, for every native method -----------------------------
def _scaled_maps(method, scale, *, batch=B, reduction="mean", dtype=None):
    """The maps of one captured step of the fixed CNN with the loss multiplied by ``scale`` (under autocast ``dtype``)."""
    model = _plain()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(batch, 3, 16, 16, generator=g), torch.randint(0, 4, (batch,), generator=g)
    ds = pa.ProxyDataset(TensorDataset(x, y), dtype=torch.float32)
    capture = pa.MapCapture(ds, spec=pa.MapSpec(method, layer="2"), select="random", budget=batch)
    idx = torch.arange(batch)
    with capture.step(model):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        capture.observe(idx, logits, y)
        (nn.functional.cross_entropy(logits.float(), y, reduction=reduction) * scale).backward()
    assert capture.commit().written == batch
    return ds.bank.get(idx)[0]


@pytest.mark.parametrize("scale", [1 / 64, 2.0**-20, 2.0**16, 1 / 3, 10.0])
@pytest.mark.parametrize("method", sorted(NATIVE_METHODS))
def test_any_positive_scale_of_the_loss_cancels_for_every_native_method(method, scale):
    maps, reference = _scaled_maps(method, scale), _scaled_maps(method, 1.0)
    assert float(reference.amax()) > 0.99
    if math.log2(scale).is_integer():  # a power of two scales every gradient exactly: the same bits
        assert torch.equal(maps, reference)
    else:  # the backward rounds the scaled gradients; the eigen methods' SVD amplifies that a little
        torch.testing.assert_close(maps, reference, atol=1e-5 if method in EIGEN else 1e-6, rtol=0)


@pytest.mark.parametrize("method", sorted(NATIVE_METHODS))
def test_a_mean_loss_over_64_images_gives_the_maps_of_the_summed_loss(method):
    # Grad-CAM++'s weights are not homogeneous in the gradient: unscaled, the mean's 1/64 would let its 1e-6 dominate
    assert torch.equal(_scaled_maps(method, 1.0, batch=64), _scaled_maps(method, 1.0, batch=64, reduction="sum"))


@pytest.mark.parametrize("method", sorted(NATIVE_METHODS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_grad_scalers_scale_cancels_under_autocast(method, dtype):
    # bf16 keeps float32's exponent range: scale 1 is the reference. In fp16 the unscaled gradient would underflow
    # (what a GradScaler prevents), so the reference is a small power of two that keeps it in range.
    reference = _scaled_maps(method, 1.0 if dtype == torch.bfloat16 else 16.0, dtype=dtype)
    assert torch.equal(_scaled_maps(method, 2.0**16, dtype=dtype), reference)
    assert float(reference.amax()) > 0.99


# -- one observe call, without blocking copies ----------------------------------------------------
@pytest.mark.parametrize("proxies", ["replace", "append"])
def test_capture_observe_records_the_batchs_mistakes_as_the_datasets_observe_does(proxies):
    torch.manual_seed(0)
    model = SmallCNN()
    ds, twin = _ds(proxies=proxies), _ds(proxies=proxies)
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"))
    x, y, _ = next(_batches(ds, 1))
    idx = torch.arange(B) + (N if proxies == "append" else 0)  # append: extra items' rows count for their samples
    with capture.step(model):
        logits = model(x)
        capture.observe(idx, logits, y)  # the only observe call
        nn.functional.cross_entropy(logits, y).backward()
    twin.observe(idx, logits, y)
    wrong = (logits.argmax(1) != y).nonzero().flatten()
    assert wrong.numel() and torch.equal(ds.observed_wrong, twin.observed_wrong) and torch.equal(ds.observed_wrong, wrong)
    capture.commit()  # the commit considered them: used up
    assert ds.observed_wrong.numel() == 0


class _Copies:
    """Every host-to-other-device copy (Tensor.to, Tensor.copy_) made while active: (non_blocking, pinned source)."""

    def __init__(self, monkeypatch):
        self.calls = []
        to, copy_ = torch.Tensor.to, torch.Tensor.copy_
        spy = self

        def to_spy(t, *args, **kwargs):
            out = to(t, *args, **kwargs)
            if t.device.type == "cpu" and out.device.type != "cpu":
                spy.calls.append(("to", bool(kwargs.get("non_blocking", False)), t.is_pinned()))
            return out

        def copy_spy(dst, src, non_blocking=False):
            if isinstance(src, torch.Tensor) and src.device.type == "cpu" and dst.device.type != "cpu":
                spy.calls.append(("copy_", bool(non_blocking), src.is_pinned()))
            return copy_(dst, src, non_blocking)

        monkeypatch.setattr(torch.Tensor, "to", to_spy)
        monkeypatch.setattr(torch.Tensor, "copy_", copy_spy)


def test_a_captured_step_copies_indices_and_labels_to_the_device_without_blocking(monkeypatch):
    # "meta" stands in for "cuda": the model, its logits and the bank there, the batch's idx and labels on the host
    # (pinning is a CUDA host allocation: proxyaug._device.to_device pins for CUDA only, tested on a GPU below)
    ds = pa.ProxyDataset(_data(), dtype=torch.float32, device="meta")
    model = _plain().to("meta")
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="2"))
    x, y, idx = next(_batches(_ds(), 1))
    x = x.to("meta")
    copies = _Copies(monkeypatch)
    with capture.step(model):
        logits = model(x)
        capture.observe(idx, logits, y)
        observed = list(copies.calls)
        nn.functional.cross_entropy(logits, y.to("meta", non_blocking=True)).backward()
    assert len(observed) >= 2, "observe() sent neither idx nor labels to the device"
    assert all(non_blocking for _, non_blocking, _ in copies.calls), f"a blocking host-to-device copy: {copies.calls}"
    # and nothing was read back: a meta tensor cannot be copied to the host


def test_a_captured_step_on_cuda_makes_no_host_sync_and_sends_from_pinned_memory(device, no_host_sync, monkeypatch):
    ds = pa.ProxyDataset(_data(), dtype=torch.float32, device=device)
    model = _plain().to(device)
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="2"))
    x, y, idx = next(_batches(_ds(), 1))
    x, target = x.to(device), y.pin_memory().to(device, non_blocking=True)
    copies = _Copies(monkeypatch)
    with no_host_sync():
        with capture.step(model):
            logits = model(x)
            capture.observe(idx, logits, y)  # idx and labels from pageable host memory: pinned, then sent
            nn.functional.cross_entropy(logits, target).backward()
    assert copies.calls and all(non_blocking and pinned for _, non_blocking, pinned in copies.calls), copies.calls
    assert capture.commit().written == int((logits.argmax(1).cpu() != y).sum())


def test_a_step_whose_forward_ran_under_no_grad_says_so():
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"))
    x, y, idx = next(_batches(ds, 1))
    for context in (torch.no_grad, torch.inference_mode):
        with pytest.warns(RuntimeWarning, match=r"ran under torch.no_grad\(\) or torch.inference_mode\(\).*Run the training forward with gradients enabled") as record:
            with capture.step(model):
                with context():
                    logits = model(x)
                capture.observe(idx, logits, y)
        assert not any("torch.compile" in str(w.message) for w in record)
    assert capture.staged == 0


def test_a_step_that_never_calls_the_given_module_with_layer_none_says_so():
    """The LightningModule case: capture.step(module) while the step calls module.net(x)."""

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = SmallCNN()

    torch.manual_seed(0)
    wrapper, ds = Wrapper(), _ds()
    capture = pa.MapCapture(ds)  # layer=None: found on the first call of the given module
    x, y, idx = next(_batches(ds, 1))
    with pytest.warns(RuntimeWarning, match=r"MapSpec\(layer=None\) finds the target layer .* its forward never ran") as record:
        with capture.step(wrapper):
            logits = wrapper.net(x)
            capture.observe(idx, logits, y)
            nn.functional.cross_entropy(logits, y).backward()
    assert not any("torch.compile" in str(w.message) for w in record) and capture.staged == 0
    with capture.step(wrapper.net):  # the module the step calls: found, captured
        logits = wrapper.net(x)
        capture.observe(idx, logits, y)
        nn.functional.cross_entropy(logits, y).backward()
    assert capture.staged == B


# -- a target layer the forward calls twice -------------------------------------------------------
def test_capture_refresh_and_attention_maps_read_a_twice_called_layer_at_its_first_call():
    model, ds = SharedBlock(), _ds()
    x, _, idx = next(_batches(ds, 1))
    spec = pa.MapSpec("gradcam", layer="block")
    # by hand: A of each call and the gradient of the predicted classes' score there (through what follows it)
    calls = []

    def record(module, inputs, output):
        output.retain_grad()
        calls.append(output)

    pred = model(x).argmax(1)
    handle = model.block.register_forward_hook(record)
    model(x).gather(1, pred[:, None]).sum().backward()
    handle.remove()
    model.zero_grad()
    cams = [(c.grad.mean(dim=(2, 3), keepdim=True) * c.detach()).sum(1).clamp_min(0) for c in calls]
    assert len(cams) == 2 and (_normalise(cams[0]) - _normalise(cams[1])).abs().max() > 0.1  # the two calls differ
    # the capture, with the predicted classes' score as the "loss": the same target as attention_maps
    capture = pa.MapCapture(ds, spec=spec, select="random", budget=B)
    with capture.step(model):
        logits = model(x)
        capture.observe(idx, logits, pred)
        logits.gather(1, pred[:, None]).sum().backward()
    capture.commit()
    refreshed = _ds()
    pa.refresh(model, refreshed, spec=spec, indices=idx, select="random", budget=B)
    # the capture divides each map by its maximum before the min-max; a refresh min-maxes it as it is
    torch.testing.assert_close(ds.bank.get(idx)[0], _normalise(cams[0]), atol=1e-5, rtol=0)
    for maps in (pa.attention_maps(model, x, spec), refreshed.bank.get(idx)[0]):
        torch.testing.assert_close(maps, normalize_maps(cams[0]), atol=1e-5, rtol=0)


# -- checkpoints ----------------------------------------------------------------------------------
def test_staged_maps_survive_a_checkpoint_taken_mid_epoch():
    import io

    results = []
    for interrupted in (False, True):
        torch.manual_seed(0)
        model, ds = SmallCNN(), _ds()
        kw = dict(spec=pa.MapSpec(layer="features.3"), select="loss", budget=N)
        capture = pa.MapCapture(ds, **kw)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for s, (x, y, idx) in enumerate(_batches(ds, 3)):
            if interrupted and s == 2:  # a checkpoint after two steps, restored into fresh objects
                buffer = io.BytesIO()
                torch.save({"ds": ds.state_dict(), "capture": capture.state_dict()}, buffer)
                buffer.seek(0)
                state = torch.load(buffer, weights_only=True)
                ds = _ds()
                ds.load_state_dict(state["ds"])
                capture = pa.MapCapture(ds, **kw)
                capture.load_state_dict(state["capture"])
                assert capture.staged == 2 * B and state["capture"]["maps"].dtype == ds.bank.maps.dtype
            with capture.step(model):
                logits = model(x)
                capture.observe(idx, logits, y)
                nn.functional.cross_entropy(logits, y).backward()
            opt.step()
            opt.zero_grad()
        report = capture.commit()
        results.append((ds.bank.state_dict(), report, ds.observed_wrong))
    (bank0, r0, o0), (bank1, r1, o1) = results
    assert r0.written == r1.written == N and torch.equal(r0.indices, r1.indices) and r0.wrong == r1.wrong
    assert all(torch.equal(bank0[k], bank1[k]) for k in bank0) and torch.equal(o0, o1)


def test_load_state_dict_replaces_what_was_staged_and_checks_the_state():
    torch.manual_seed(0)
    model, ds = SmallCNN(), _ds()
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="features.3"), select="random", budget=N)
    x, y, idx = next(_batches(ds, 1))
    with capture.step(model):
        logits = model(x)
        capture.observe(idx, logits, y)
        nn.functional.cross_entropy(logits, y).backward()
    state = capture.state_dict()
    assert sorted(state) == ["maps", "ok", "rows", "score", "wrong"] and torch.equal(state["rows"], idx)
    assert all(v.device.type == "cpu" for v in state.values()) and capture.staged == B  # saving keeps them staged
    empty = pa.MapCapture(ds).state_dict()
    capture.load_state_dict(empty)
    assert capture.staged == 0 and capture.commit().written == 0
    with pytest.raises(KeyError, match=r"state lacks \['ok'\]; expected MapCapture.state_dict\(\) output"):
        capture.load_state_dict({k: v for k, v in state.items() if k != "ok"})
    with pytest.raises(IndexError, match=r"state\['rows'\] contains 99"):
        capture.load_state_dict({**state, "rows": state["rows"] + 99 - int(state["rows"].max())})
    with pytest.raises(ValueError, match=r"state\['wrong'\] must hold 8 entries"):
        capture.load_state_dict({**state, "wrong": state["wrong"][:3]})
    assert capture.staged == 0  # a refused state leaves the capture as it was


def test_staged_batches_on_two_devices_concatenate_on_the_latest_steps():
    """A batch restored by load_state_dict lives on the bank's device, later steps on the model's
    ("meta" stands in for an accelerator): the commit's concat must not mix them."""
    from proxyaug.capture.staging import concat

    restored = (torch.tensor([1]), torch.zeros(1, 2, 2), *[torch.tensor([True])] * 4)
    step = tuple(t.to("meta") for t in restored)
    out = concat([restored, step])
    assert all(t.device.type == "meta" and t.shape[0] == 2 for t in out)
