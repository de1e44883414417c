import gc
import weakref

import pytest
import torch
from torch import nn

import proxyaug as pa
from proxyaug.attention import find_target_layer

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


def test_low_resolution_maps_are_the_layer_resolution():
    model = timm.create_model("resnet18", num_classes=10)
    photos = torch.rand(2, 3, 224, 224)
    name, _ = find_target_layer(model, photos)
    maps = pa.attention_maps(model, photos, pa.MapSpec("gradcam++"))
    assert name == "layer4" and maps.shape == (2, 7, 7)
    assert maps.amin(dim=(1, 2)).eq(0).all() and maps.amax(dim=(1, 2)).gt(0.99).all()


def test_maps_on_the_device(model, device):
    model = model.to(device)
    x = torch.rand(3, 3, 16, 16).to(device)
    maps = pa.attention_maps(model, x, pa.MapSpec("gradcam++"), size=(16, 16))
    assert maps.device.type == device.type and maps.dtype == torch.float32 and maps.shape == (3, 16, 16)
    torch.testing.assert_close(maps.cpu(), pa.attention_maps(model.cpu(), x.cpu(), pa.MapSpec("gradcam++"), size=(16, 16)), atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "eigencam"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_maps_under_autocast_are_float32_and_close(model, device, method, dtype):
    model = model.to(device).eval()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)).to(device)
    expect = pa.attention_maps(model, x, pa.MapSpec(method))
    with torch.autocast(device.type, dtype=dtype):
        maps = pa.attention_maps(model, x, pa.MapSpec(method))
    assert maps.dtype == torch.float32 and maps.shape == expect.shape
    # the forward pass runs in the lower precision; the map's own arithmetic in float32
    assert (maps - expect).abs().max() < 0.1 and torch.isfinite(maps).all()


def test_maps_of_a_channels_last_model_and_batch_equal_the_contiguous_ones(model, device):
    model = model.to(device).eval()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)).to(device)
    expect = pa.attention_maps(model, x, pa.MapSpec("gradcam++"), size=(16, 16))
    cl = model.to(memory_format=torch.channels_last)
    maps = pa.attention_maps(cl, x.contiguous(memory_format=torch.channels_last), pa.MapSpec("gradcam++"), size=(16, 16))
    torch.testing.assert_close(maps, expect, atol=1e-4, rtol=0)


def test_layer_by_name_and_in_place_consumer():
    # DenseNet applies F.relu(features, inplace=True) to the target layer's output
    model = torchvision.models.densenet121(num_classes=3)
    maps = pa.attention_maps(model, torch.rand(1, 3, 64, 64), pa.MapSpec(layer="features"))
    assert maps.shape == (1, 2, 2) and torch.isfinite(maps).all()


def _snapshot(model):
    return {
        "training": [m.training for m in model.modules()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
    }


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def test_model_left_exactly_as_found(model):
    # a mixed state: training, with the stem's BatchNorm frozen, a frozen conv and pending gradients
    model.train()
    model.features[1].eval()
    model.features[0].weight.requires_grad_(False)
    loss = model(torch.rand(4, 3, 16, 16)).sum()
    loss.backward()  # gradients waiting for optimizer.step()
    before = _snapshot(model)
    grad_on = torch.is_grad_enabled()
    maps = pa.attention_maps(model, torch.rand(5, 3, 16, 16), pa.MapSpec("gradcam++"))
    after = _snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    for a, b in zip(after["grads"], before["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(after["params"], before["params"]))
    assert all(torch.equal(a, b) for a, b in zip(after["buffers"], before["buffers"]))  # BN stats untouched
    assert _no_hooks(model) and torch.is_grad_enabled() == grad_on
    assert maps.grad_fn is None and not maps.requires_grad


def test_no_graph_is_retained(model):
    saved = []

    def keep(module, inputs, output):
        saved.append(weakref.ref(inputs[0]))  # the Linear saves its input for backward

    handle = model.head.register_forward_hook(keep)
    maps = pa.attention_maps(model, torch.rand(3, 3, 16, 16))
    handle.remove()
    gc.collect()
    assert saved and all(ref() is None for ref in saved)
    assert maps.shape == (3, 8, 8)


def test_frozen_backbone_works(model):
    for p in model.parameters():
        p.requires_grad_(False)
    maps = pa.attention_maps(model, torch.rand(2, 3, 16, 16))
    assert maps.shape == (2, 8, 8) and all(p.grad is None for p in model.parameters())


def test_no_grad_context_and_grad_mode_restored(model):
    with torch.no_grad():
        maps = pa.attention_maps(model, torch.rand(2, 3, 16, 16))
        assert not torch.is_grad_enabled()
    assert maps.shape == (2, 8, 8)


def test_exception_in_forward_restores_model(model):
    model.train()

    class Boom(RuntimeError):
        pass

    def explode(module, inputs, output):
        raise Boom("forward failed")

    handle = model.head.register_forward_hook(explode)
    with pytest.raises(Boom):
        pa.attention_maps(model, torch.rand(2, 3, 16, 16), pa.MapSpec(layer="features"))
    handle.remove()
    assert all(m.training for m in model.modules()) and _no_hooks(model)


def test_target_label_changes_the_map(model):
    x = torch.rand(4, 3, 16, 16)
    a = pa.attention_maps(model, x, target=torch.tensor([0, 0, 0, 0]))
    b = pa.attention_maps(model, x, target=2)
    assert a.shape == b.shape and not torch.allclose(a, b)
    c = pa.attention_maps(model, x, pa.MapSpec(layer=model.features), target=torch.tensor([2, 2, 2, 2]))
    assert torch.equal(b, c)


def test_errors(model):
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"method='nocam' is not supported; expected one of 'gradcam', 'gradcam\+\+'.*scorecam"):
        pa.attention_maps(model, x, pa.MapSpec("nocam"))
    with pytest.raises(ValueError, match=r"layer='layer9' is not a module of SmallCNN"):
        pa.attention_maps(model, x, pa.MapSpec(layer="layer9"))
    with pytest.raises(ValueError, match=r"is not a submodule of SmallCNN"):
        pa.attention_maps(model, x, pa.MapSpec(layer=nn.Conv2d(3, 3, 1)))
    with pytest.raises(ValueError, match=r"target layer 'head' \(Linear\) returned \(2, 4\); expected a \(B, C, h, w\) tensor"):
        pa.attention_maps(model, x, pa.MapSpec(layer="head"))
    with pytest.raises(ValueError, match=r"target must be None, an int or 2 class indices"):
        pa.attention_maps(model, x, target=[0, 1, 2])
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\)"):
        pa.attention_maps(model, x[0])
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    with pytest.raises(ValueError, match=r"could not find a target layer in Sequential.*Pass MapSpec\(layer="):
        pa.attention_maps(mlp, x)


def test_dict_output_without_logits_names_the_keys(model):
    class Scores(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return {"scores": self.net(x), "aux": 0}

    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(TypeError, match=r"the model returned a dict with keys \['aux', 'scores'\]; expected logits under the key 'logits'.*logits=lambda out: out\['scores'\]"):
        pa.attention_maps(Scores(model), x)
    assert pa.attention_maps(Scores(model), x, pa.MapSpec(logits=lambda out: out["scores"])).shape == (2, 8, 8)


def test_pytorch_grad_cam_methods_work_under_no_grad(model):
    pytest.importorskip("pytorch_grad_cam")
    x = torch.rand(2, 3, 16, 16)
    expect = pa.attention_maps(model, x, pa.MapSpec("fullgrad"))
    with torch.no_grad():
        got = pa.attention_maps(model, x, pa.MapSpec("fullgrad"))
    assert torch.allclose(got, expect)


def test_without_pytorch_grad_cam_the_native_methods_work_and_the_others_name_the_extra(model, monkeypatch):
    import builtins
    import sys

    real_import = builtins.__import__

    def no_grad_cam(name, *args, **kwargs):
        if name.startswith("pytorch_grad_cam"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_grad_cam)
    for mod in [m for m in sys.modules if m.startswith("pytorch_grad_cam")]:
        monkeypatch.delitem(sys.modules, mod)
    x = torch.rand(2, 3, 16, 16)
    assert pa.attention_maps(model, x, pa.MapSpec("gradcam++")).shape == (2, 8, 8)
    with pytest.raises(ValueError, match=r"method='scorecam' is not supported.*pip install 'proxyaug\[gradcam\]'"):
        pa.attention_maps(model, x, pa.MapSpec("scorecam"))


def test_a_twice_called_layer_without_gradients_is_read_at_its_first_call():
    # EigenCAM records the layer's output without a graph: the first call's, as with gradients
    torch.manual_seed(0)
    stem, block = nn.Conv2d(3, 8, 3, padding=1), nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    model = nn.Sequential(stem, nn.ReLU(), block, block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        first = block(stem(x).relu())
        second = block(first)
    by_call = [pa.functional.normalize_maps(pa.attention.eigen_projection(a).clamp_min(0)) for a in (first, second)]
    maps = pa.attention_maps(model, x, pa.MapSpec("eigencam", layer="2"))
    torch.testing.assert_close(maps, by_call[0], atol=1e-5, rtol=0)
    assert (maps - by_call[1]).abs().max() > 0.1
