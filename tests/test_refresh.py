import pytest
import torch
from torch import nn

import proxyaug as pa
from proxyaug.selection import choose

from .conftest import predictions


def _thesis_subset(indices, fraction, seed):
    """The thesis rule's draw: ``fraction`` of the wrong ``indices`` at random from ``seed``."""
    return choose("wrong", indices, torch.ones(indices.numel(), dtype=torch.bool), None, fraction, seed)


def _bank_state(bank):
    return {k: v.clone() for k, v in bank.state_dict().items()}


def test_refresh_fills_exactly_the_chosen_wrong_samples(model, base, device):
    model, ds = model.to(device), pa.ProxyDataset(base, device=device)
    wrong = (predictions(model, base) != base.tensors[1]).nonzero().flatten()
    assert 5 < wrong.numel() < 40
    report = pa.refresh(model, ds, spec=pa.MapSpec("gradcam"), fraction=1.0, batch_size=7)
    assert torch.equal(ds.bank.present.nonzero().flatten(), wrong)
    assert (report.scanned, report.wrong, report.chosen, report.written) == (40, wrong.numel(), wrong.numel(), wrong.numel())
    assert report.source == "all" and report.layer == "features" and report.method == "gradcam"
    # the stored maps are the model's maps (to float16 storage precision)
    x = base.tensors[0][wrong].to(device)
    expect = pa.attention_maps(model, x, pa.MapSpec("gradcam"))
    stored, present = ds.bank.get(wrong)
    assert stored.device.type == device.type and present.all() and (stored - expect).abs().max() < 1e-3


def test_fraction_is_a_reproducible_subset(model, base):
    wrong = (predictions(model, base) != base.tensors[1]).nonzero().flatten()
    a, b = pa.ProxyDataset(base), pa.ProxyDataset(base)
    ra = pa.refresh(model, a, fraction=0.2, seed=7)
    rb = pa.refresh(model, b, fraction=0.2, seed=7)
    assert torch.equal(ra.indices, rb.indices) and torch.equal(a.bank.maps, b.bank.maps)
    assert torch.equal(ra.indices, _thesis_subset(wrong, 0.2, 7))
    assert ra.chosen == max(1, round(0.2 * wrong.numel())) and set(ra.indices.tolist()) <= set(wrong.tolist())
    assert torch.equal(a.bank.present.nonzero().flatten(), ra.indices)


def test_default_seed_follows_the_round(model, base):
    ds = pa.ProxyDataset(base)
    r0 = pa.refresh(model, ds, fraction=0.3)
    r1 = pa.refresh(model, ds, fraction=0.3)
    wrong = (predictions(model, base) != base.tensors[1]).nonzero().flatten()
    assert torch.equal(r0.indices, _thesis_subset(wrong, 0.3, 0))
    assert torch.equal(r1.indices, _thesis_subset(wrong, 0.3, 1))
    assert ds.refreshes == 2 and ds.last_report is r1
    # earlier maps are kept unless reset
    assert set(ds.bank.present.nonzero().flatten().tolist()) == set(r0.indices.tolist()) | set(r1.indices.tolist())
    r2 = pa.refresh(model, ds, fraction=0.3, reset=True)
    assert torch.equal(ds.bank.present.nonzero().flatten(), r2.indices)


def test_target_label_and_preprocess(model, base, device):
    model, ds = model.to(device), pa.ProxyDataset(base, device=device)
    calls = []

    def preprocess(x):
        calls.append(x.shape[0])
        return (x - 0.5) / 0.25

    report = pa.refresh(model, ds, fraction=1.0, target="label", preprocess=preprocess, batch_size=16)
    assert sum(calls[:3]) == 40  # the scan saw every image, normalised
    idx = report.indices
    x = preprocess(base.tensors[0][idx].to(device))
    expect = pa.attention_maps(model, x, pa.MapSpec("gradcam++"), target=base.tensors[1][idx].to(device))
    stored, _ = ds.bank.get(idx)
    assert (stored - expect).abs().max() < 1e-3


def test_observed_indices_restrict_the_scan(model, base, device):
    model, ds = model.to(device), pa.ProxyDataset(base, device=device)
    model.eval()
    with torch.no_grad():
        logits = model(base.tensors[0][:10].to(device))
    ds.observe(torch.arange(10), logits, base.tensors[1][:10])  # CPU idx and labels, as a loader yields them
    observed = ds.observed_wrong
    assert torch.equal(observed.cpu(), (logits.argmax(1).cpu() != base.tensors[1][:10]).nonzero().flatten())
    report = pa.refresh(model, ds, fraction=1.0)
    assert report.source == "observed" and report.scanned == observed.numel()
    assert torch.equal(report.indices.cpu(), observed.cpu())
    assert ds.observed_wrong.numel() == 0  # a new round starts
    assert pa.refresh(model, ds, fraction=1.0).source == "all"


def test_explicit_indices(model, base):
    ds = pa.ProxyDataset(base)
    report = pa.refresh(model, ds, indices=range(5), fraction=1.0)
    assert report.source == "indices" and report.scanned == 5
    assert set(report.indices.tolist()) <= set(range(5))
    again = pa.refresh(model, pa.ProxyDataset(base), indices=torch.arange(5), fraction=1.0)
    assert torch.equal(again.indices, report.indices)


def test_no_wrong_predictions_is_a_no_op_that_says_so(base):
    class Oracle(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.labels = base.tensors[1]

        def forward(self, x):
            f = self.conv(x)
            hit = (x.flatten(1)[:, None, :] == base.tensors[0].flatten(1)[None]).all(-1).float().argmax(1)
            return nn.functional.one_hot(self.labels[hit], 4).float() * 10 + f.mean((2, 3)) * 0

    ds = pa.ProxyDataset(base)
    report = pa.refresh(Oracle(), ds, fraction=1.0)
    assert report.wrong == 0 and report.written == 0 and not ds.bank.present.any()
    assert "no wrong predictions among 40 scanned images" in str(report)


def test_failed_refresh_leaves_bank_model_and_observations_as_they_were(model, base):
    ds = pa.ProxyDataset(base)
    pa.refresh(model, ds, fraction=0.5, seed=0)
    ds.observe(torch.arange(40), torch.rand(40, 4), base.tensors[1])
    bank_before, observed_before = _bank_state(ds.bank), ds.observed_wrong
    model.train()
    model.features[1].eval()
    flags = [m.training for m in model.modules()]
    calls = {"n": 0}

    def fail_late(module, inputs, output):
        calls["n"] += 1
        # 10 scan batches, 1 layer-detection pass, then the attention batches: fail in the second
        if calls["n"] == 13:
            raise KeyboardInterrupt

    handle = model.head.register_forward_hook(fail_late)
    with pytest.raises(KeyboardInterrupt):
        pa.refresh(model, ds, fraction=1.0, batch_size=4)
    handle.remove()
    assert calls["n"] == 13
    assert all(torch.equal(v, ds.bank.state_dict()[k]) for k, v in bank_before.items())
    assert torch.equal(ds.observed_wrong, observed_before) and ds.refreshes == 1
    assert [m.training for m in model.modules()] == flags
    assert all(not m._forward_hooks for m in model.modules())


def test_refresh_between_backward_and_step_keeps_gradients_bit_identical(model, base, device):
    model, ds = model.to(device), pa.ProxyDataset(base, device=device)
    model.train()
    nn.functional.cross_entropy(model(base.tensors[0][:8].to(device)), base.tensors[1][:8].to(device)).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    running = model.features[1].running_mean.clone()
    pa.refresh(model, ds, fraction=1.0)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert torch.equal(running, model.features[1].running_mean)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(fraction=0.0), ValueError, r"fraction=0.0 is out of range; expected a number in \(0, 1\]"),
        (dict(fraction=1.5), ValueError, r"fraction=1.5 is out of range"),
        (dict(spec="gradcam"), TypeError, r"spec='gradcam' is a method name; expected a proxyaug.MapSpec such as MapSpec\('gradcam'\)"),
        (dict(select="hardest"), ValueError, r"select='hardest' is not supported; expected one of 'wrong'"),
        (dict(target="other"), ValueError, r"target='other' is not supported; expected one of 'pred', 'label'"),
        (dict(batch_size=0), ValueError, r"batch_size=0 is not valid; expected a positive integer"),
        (dict(preprocess=3), TypeError, r"preprocess must be callable"),
        (dict(spec=pa.MapSpec(layer="nope")), ValueError, r"layer='nope' is not a module of SmallCNN"),
        (dict(indices=[0, 99]), IndexError, r"indices contains 99, out of range"),
        (dict(indices=[3, 3, 5]), ValueError, r"indices holds the sample\(s\) \[3\] more than once; expected distinct sample indices"),
    ],
)
def test_bad_arguments(model, base, kwargs, exc, match):
    ds = pa.ProxyDataset(base)
    with pytest.raises(exc, match=match):
        pa.refresh(model, ds, **kwargs)
    assert not ds.bank.present.any()


def test_not_a_proxy_dataset(model, base):
    with pytest.raises(TypeError, match=r"ds must be a proxyaug.ProxyDataset"):
        pa.refresh(model, base)


def test_model_without_spatial_layer(base):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    with pytest.raises(ValueError, match=r"could not find a target layer"):
        pa.refresh(mlp, pa.ProxyDataset(base), fraction=1.0)


def test_progress_bar(model, base, capsys):
    pa.refresh(model, pa.ProxyDataset(base), batch_size=2, progress=True)
    assert "proxyaug scan" in capsys.readouterr().err


# -- checks where data enters, and messages that point the right way -----------------------------------


def test_scanned_images_outside_unit_range_are_refused(model, base):
    from .conftest import Items

    items = [(base[i][0] * (255 if i else 1), int(base[i][1])) for i in range(len(base))]  # item 0 passes the build check
    ds = pa.ProxyDataset(Items(items))
    before = _bank_state(ds.bank)
    with pytest.raises(ValueError, match=r"the values of the scanned images lie in \[0\.?\d*, 2\d\d\.?\d*\]; expected float images in \[0, 1\]"):
        pa.refresh(model, ds)
    assert all(torch.equal(v, before[k]) for k, v in ds.bank.state_dict().items())


def test_inference_mode_is_named(model, base):
    ds = pa.ProxyDataset(base)
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"refresh\(spec=MapSpec\('gradcam\+\+'\)\) needs gradients, which torch.inference_mode\(\) disables.*outside the inference_mode block"):
        pa.refresh(model, ds)
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"inference_mode"):
        pa.attention_maps(model, base.tensors[0][:2])


def test_uint8_images_with_a_preprocess_that_does_not_convert(model):
    from torchvision.transforms import v2

    from .conftest import Items

    ds = pa.ProxyDataset(Items([(torch.randint(0, 255, (3, 16, 16), dtype=torch.uint8), i % 4) for i in range(8)]))
    with pytest.raises(TypeError, match=r"preprocess failed on the dataset's torch.uint8 images .*v2.ToDtype\(torch.float32, scale=True\)"):
        pa.refresh(model, ds, preprocess=v2.Normalize([0.5] * 3, [0.5] * 3))
    with pytest.raises(TypeError, match=r"preprocess returned torch.uint8 images; expected floating point"):
        pa.refresh(model, ds, preprocess=lambda x: x)


def test_report_names_the_resolution_and_coarse_maps_warn(model, base):
    ds = pa.ProxyDataset(base)
    report = pa.refresh(model, ds, fraction=1.0)
    assert report.resolution == (8, 8) and "8x8 gradcam++ maps" in str(report)
    tiny = pa.ProxyDataset(torch.utils.data.TensorDataset(base.tensors[0][:, :, :4, :4], base.tensors[1]))
    with pytest.warns(UserWarning, match=r"refresh: the maps at .* are 2x2, too coarse.*MapSpec\(layer="):
        pa.refresh(model, tiny, fraction=1.0)


def test_progress_false_silences_pytorch_grad_cam_bars(model, base, capsys):
    pytest.importorskip("pytorch_grad_cam")
    ds = pa.ProxyDataset(base)
    report = pa.refresh(model, ds, spec=pa.MapSpec("scorecam"), fraction=0.2, progress=False, batch_size=64)
    assert report.written > 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_reset_clears_old_maps_even_when_nothing_is_written(model, base):
    ds = pa.ProxyDataset(base)
    pa.refresh(model, ds, fraction=1.0)
    assert ds.bank.present.any()
    right = (predictions(model, base) == base.tensors[1]).nonzero().flatten()
    report = pa.refresh(model, ds, indices=right, reset=True)  # nothing wrong among them: no map written
    assert report.written == 0 and not ds.bank.present.any()


def test_device_other_than_the_model_is_refused(model, base):
    ds = pa.ProxyDataset(base)
    with pytest.raises(ValueError, match=r"device='meta' but the model's parameters are on cpu.*model.to\('meta'\)"):
        pa.refresh(model, ds, device="meta")
    assert pa.refresh(model, ds, device="cpu").scanned == 40


def test_explicit_indices_clear_only_their_own_observations(model, base):
    ds = pa.ProxyDataset(base)
    with torch.no_grad():
        logits = model.eval()(base.tensors[0])
    ds.observe(torch.arange(40), logits, base.tensors[1])
    observed = ds.observed_wrong
    assert observed.numel() > 2
    pa.refresh(model, ds, indices=observed[:2])
    assert ds.observed_wrong.tolist() == observed[2:].tolist()
    assert pa.refresh(model, ds).source == "observed"
