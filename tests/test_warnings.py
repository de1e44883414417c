"""Warnings where maps are too coarse or empty to mean anything (issue 27): at every entry point that
makes or scores maps, attributed to the caller's line, naming a finer layer that exists; the
all-zero maps reported; a layer that is not a module answered with candidates."""

import warnings

import pytest
import torch
from torch import nn

import proxyaug as pa

timm = pytest.importorskip("timm")


def _resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=10, in_chans=1).eval()  # at 28 px: layer3 2x2, layer2 4x4


def _ds(n=8):
    return pa.ProxyDataset(torch.utils.data.TensorDataset(torch.rand(n, 1, 28, 28), torch.arange(n) % 10))


def _only(record, text):
    hits = [w for w in record if text in str(w.message)]
    assert len(hits) == 1, [str(w.message) for w in record]
    assert hits[0].filename == __file__, hits[0].filename  # the caller's line, not proxyaug's
    return str(hits[0].message)


def test_attention_maps_warns_at_the_caller_and_names_a_finer_layer():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        maps = pa.attention_maps(_resnet(), torch.rand(2, 1, 28, 28))
    assert maps.shape == (2, 2, 2)
    msg = _only(record, "too coarse")
    assert "attention_maps: the maps at 'layer3' are 2x2" in msg and "'layer2' gives 4x4 (MapSpec(layer='layer2'))" in msg
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pa.attention_maps(_resnet(), torch.rand(2, 1, 28, 28), pa.MapSpec(layer="layer2"), size=(28, 28))
    assert not [w for w in record if "too coarse" in str(w.message)]


def test_refresh_warns_at_the_caller_and_names_a_finer_layer():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        report = pa.refresh(_resnet(), _ds(), select="random", budget=4)
    assert report.resolution == (2, 2)
    assert "refresh: the maps at 'layer3' are 2x2" in _only(record, "too coarse") and "'layer2' gives 4x4" in _only(record, "too coarse")


def test_capture_warns_once_at_the_step_and_names_its_layer():
    model, ds = _resnet().train(), _ds()
    capture = pa.MapCapture(ds, select="random", budget=1.0)
    assert capture.layer is None
    x, y, idx = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(2):
            with capture.step(model):
                logits = model(x)
                capture.observe(idx, logits, y)
                nn.functional.cross_entropy(logits, y).backward()
    assert "MapCapture: the maps at 'layer3' are 2x2" in _only(record, "too coarse")  # once, for two steps
    assert capture.layer == "layer3"
    report = capture.commit()
    text = str(report)
    assert "committed in" in text and "computed in the steps" in text and "images/s" not in text


def test_metrics_warn_on_coarse_maps_at_the_caller():
    regions = torch.zeros(1, 28, 28, dtype=torch.bool)
    regions[:, 10:18, 10:18] = True
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pa.metrics.energy_in_region(torch.rand(1, 2, 2), regions)
        pa.metrics.energy_in_region(torch.rand(1, 7, 7), regions)
    assert "maps: 2x2 maps are too coarse for a metric" in _only(record, "too coarse")


def _no_evidence():
    """A model whose class 0 score falls as its only feature map rises: Grad-CAM's ReLU leaves nothing."""
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        net[0].weight.fill_(1.0), net[0].bias.fill_(0.1), net[4].weight.copy_(torch.tensor([[-1.0], [1.0]])), net[4].bias.zero_()
    return net.eval()


def test_all_zero_maps_are_reported_as_such():
    net, x = _no_evidence(), torch.rand(3, 1, 8, 8)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        maps = pa.attention_maps(net, x, pa.MapSpec("gradcam"), target=0)
    assert maps.abs().sum() == 0
    assert "3 of 3 gradcam maps are all zero" in _only(record, "all zero")
    ds = pa.ProxyDataset(torch.utils.data.TensorDataset(x, torch.ones(3, dtype=torch.long)))  # label 1; the model says 1 too
    report = pa.refresh(net, ds, spec=pa.MapSpec("gradcam"), select="random", budget=3, target="label")
    assert report.empty == 0  # class 1's maps hold evidence
    ds0 = pa.ProxyDataset(torch.utils.data.TensorDataset(x, torch.zeros(3, dtype=torch.long)))
    report = pa.refresh(net, ds0, spec=pa.MapSpec("gradcam"), select="random", budget=3, target="label")
    assert report.empty == 3 and "(3 all zero: they mark nothing)" in str(report)


def test_a_layer_that_is_not_a_module_lists_candidates():
    with pytest.raises(ValueError, match=r"layer='stage9' is not a module of ResNet.*Its top-level modules: \['conv1', 'bn1'"):
        pa.attention_maps(_resnet(), torch.rand(1, 1, 28, 28), pa.MapSpec(layer="stage9"))
    with pytest.raises(ValueError, match=r"Close names: \['layer4'"):
        pa.attention_maps(_resnet(), torch.rand(1, 1, 28, 28), pa.MapSpec(layer="layer44"))
