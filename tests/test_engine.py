"""The attention engine: fidelity to pytorch-grad-cam, architectures, wrappers, the adapter, policies."""

import functools

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import proxyaug as pa
import proxyaug.attention.cam as cam_module
from proxyaug.attention import resolve_layers
from proxyaug.selection import budget_size

from .conftest import SharedBlock

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

REFERENCE = {
    "gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM, "hirescam": pgc.HiResCAM,
    "layercam": pgc.LayerCAM, "gradcamelementwise": pgc.GradCAMElementWise, "eigencam": pgc.EigenCAM,
    "eigengradcam": pgc.EigenGradCAM,
}
ARCHS = {
    "timm-resnet18": lambda: timm.create_model("resnet18", num_classes=10),
    "timm-efficientnet_b0": lambda: timm.create_model("efficientnet_b0", num_classes=10),
    "tv-mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(num_classes=10),
    "timm-convnext_atto": lambda: timm.create_model("convnext_atto", num_classes=10),
    "timm-vit_tiny": lambda: timm.create_model("vit_tiny_patch16_224", num_classes=10),
    "timm-swin_tiny": lambda: timm.create_model("swin_tiny_patch4_window7_224", num_classes=10),
}
SLOW_ARCH_METHODS = {"timm-swin_tiny": ("gradcam", "gradcam++", "eigencam")}
TARGETS = [1, 3, 5, 7]


@functools.lru_cache(maxsize=None)
def _model(arch):
    torch.manual_seed(0)
    return ARCHS[arch]()


@pytest.fixture(scope="module")
def photos():
    """scikit-learn's two bundled photographs at 224 px, plus two noise images, normalised."""
    from sklearn.datasets import load_sample_images

    real = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255 for im in load_sample_images().images])
    real = nn.functional.interpolate(real, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    x = torch.cat([real, torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def _reference(model, x, method_cls, layers, targets, **kw):
    image_size = tuple(x.shape[-2:])
    with method_cls(model, [t.module for t in layers], reshape_transform=lambda t: layers[0].to_nchw(t, image_size)) as cam:
        return torch.from_numpy(cam(x, None if targets is None else [ClassifierOutputTarget(t) for t in targets], **kw))


def _ours_both_signs(model, x, method, eigen_smooth=False, **kw):
    """Our maps, and the same with the opposite eigen sign (pytorch-grad-cam's sign is arbitrary)."""
    spec = pa.MapSpec(method, eigen_smooth=eigen_smooth)
    ours = pa.attention_maps(model, x, spec, **kw)
    original = cam_module.eigen_projection
    cam_module.eigen_projection = functools.partial(original, flip=True)
    try:
        flipped = pa.attention_maps(model, x, spec, **kw)
    finally:
        cam_module.eigen_projection = original
    return ours, flipped


def _max_diff(ours, ref, flipped=None):
    d = (ours - ref).abs().amax(dim=(1, 2))
    if flipped is not None:  # per image: equal up to the eigenvector's sign
        d = torch.minimum(d, (flipped - ref).abs().amax(dim=(1, 2)))
    return d.max().item()


CASES = [(a, m) for a in ARCHS for m in REFERENCE if m in SLOW_ARCH_METHODS.get(a, REFERENCE)]


@pytest.mark.parametrize("arch, method", CASES, ids=[f"{a}-{m}" for a, m in CASES])
def test_native_methods_match_pytorch_grad_cam_at_224(arch, method, photos):
    model = _model(arch)
    layers = resolve_layers(model, None, photos)
    eigen = method.startswith("eigen")
    if eigen:
        ours, flipped = _ours_both_signs(model, photos, method, target=TARGETS, size=(224, 224))
    else:
        ours, flipped = pa.attention_maps(model, photos, pa.MapSpec(method), target=TARGETS, size=(224, 224)), None
    ref = _reference(model, photos, REFERENCE[method], layers, TARGETS)
    assert ours.shape == (4, 224, 224) and ours.dtype == torch.float32
    assert _max_diff(ours, ref, flipped) <= 1e-4
    assert ref.amax(dim=(1, 2)).gt(0.5).sum() >= 3  # real maps, not all zeros on both sides


def test_predicted_class_targets_match(photos):
    model = _model("timm-resnet18")
    ours = pa.attention_maps(model, photos, pa.MapSpec("gradcam++"), size=(224, 224))
    ref = _reference(model, photos, pgc.GradCAMPlusPlus, resolve_layers(model, None, photos), None)
    assert _max_diff(ours, ref) <= 1e-4


def test_several_layers_match(photos):
    model = _model("timm-resnet18")
    layers = resolve_layers(model, ["layer3", "layer4"], None)
    ours = pa.attention_maps(model, photos, pa.MapSpec("gradcam", layer=["layer3", model.layer4]), target=TARGETS, size=(224, 224))
    ref = _reference(model, photos, pgc.GradCAM, layers, TARGETS)
    assert _max_diff(ours, ref) <= 1e-4
    low = pa.attention_maps(model, photos, pa.MapSpec("gradcam", layer=["layer3", "layer4"]))
    assert low.shape == (4, 14, 14)  # the finer layer's resolution


def test_eigen_smooth_matches(photos):
    model = _model("timm-resnet18")
    layers = resolve_layers(model, None, photos)
    ours, flipped = _ours_both_signs(model, photos, "layercam", target=TARGETS, size=(224, 224), eigen_smooth=True)
    ref = _reference(model, photos, pgc.LayerCAM, layers, TARGETS, eigen_smooth=True)
    assert _max_diff(ours, ref, flipped) <= 1e-4


def test_eigen_sign_rule():
    a = torch.randn(3, 8, 5, 5)
    proj = pa.attention.eigen_projection(a)
    assert (proj.flatten(1).amax(1) >= proj.flatten(1).amin(1).abs()).all()
    torch.testing.assert_close(pa.attention.eigen_projection(a, flip=True), -proj)


def test_smooth_sigma_is_a_gaussian_of_the_map(model):
    x = torch.rand(3, 3, 16, 16)
    plain = pa.attention_maps(model, x)
    smooth = pa.attention_maps(model, x, pa.MapSpec(smooth_sigma=1.0))
    expect = pa.functional.normalize_maps(pa.functional.gaussian_blur(plain[:, None], 1.0)[:, 0])
    # not exact: the min-max epsilon (1e-7) weighs on the tiny maps of an untrained model
    torch.testing.assert_close(smooth, expect, atol=1e-2, rtol=0)
    assert (smooth - plain).abs().max() > 0.1


# -- target-layer detection across families -------------------------------------------------
class _TinyTVViT(torchvision.models.VisionTransformer):
    def __init__(self):
        super().__init__(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=3)
        nn.init.normal_(self.heads.head.weight)  # torchvision zero-initialises the head


DETECT = [
    ("timm-resnet18", lambda: timm.create_model("resnet18", num_classes=3), 64, "layer4", (2, 2)),
    ("timm-efficientnet_b0", lambda: timm.create_model("efficientnet_b0", num_classes=3), 64, "bn2", (2, 2)),
    ("tv-vgg11", lambda: torchvision.models.vgg11(num_classes=3), 64, "features", (2, 2)),
    ("timm-convnext_atto", lambda: timm.create_model("convnext_atto", num_classes=3), 64, "norm_pre", (2, 2)),
    ("tv-mobilenet_v3_small", lambda: torchvision.models.mobilenet_v3_small(num_classes=3), 64, "features", (2, 2)),
    ("timm-mobilenetv3", lambda: timm.create_model("mobilenetv3_small_050", num_classes=3), 64, "blocks", (2, 2)),
    ("tv-densenet121", lambda: torchvision.models.densenet121(num_classes=3), 64, "features", (2, 2)),
    ("timm-regnetx_002", lambda: timm.create_model("regnetx_002", num_classes=3), 64, "final_conv", (2, 2)),
    ("timm-vit_tiny", lambda: timm.create_model("vit_tiny_patch16_224", num_classes=3, img_size=64), 64, "blocks.11.norm1", (4, 4)),
    ("timm-deit_distilled", lambda: timm.create_model("deit_tiny_distilled_patch16_224", num_classes=3, img_size=64), 64, "blocks.11.norm1", (4, 4)),
    ("tv-vit", _TinyTVViT, 32, "encoder.layers.encoder_layer_1.ln_1", (4, 4)),
    ("timm-swin_tiny", lambda: timm.create_model("swin_tiny_patch4_window7_224", num_classes=3), 224, "norm", (7, 7)),
]


@pytest.mark.parametrize("arch, make, px, name, res", DETECT, ids=[d[0] for d in DETECT])
def test_detects_the_layer_of_each_family(arch, make, px, name, res):
    torch.manual_seed(0)
    model = make()
    x = torch.rand(2, 3, px, px)
    assert pa.find_target_layer(model, x)[0] == name
    maps = pa.attention_maps(model, x, pa.MapSpec("gradcam++"))
    # (an untrained model's map can be nearly flat: min-max's 1e-7 then keeps it near 0)
    assert maps.shape == (2, *res) and torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert all(not m._forward_hooks for m in model.modules())


def test_nothing_fits_lists_candidates():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"last outputs: 0: \(1, 48\), 1: \(1, 8\), 2: \(1, 8\), 3: \(1, 2\)\)\. Pass MapSpec\(layer="):
        pa.find_target_layer(mlp, torch.rand(1, 3, 4, 4))


def test_vit_grid_follows_the_input_size():
    model = timm.create_model("vit_tiny_patch16_224", num_classes=3, dynamic_img_size=True)
    assert pa.attention_maps(model, torch.rand(1, 3, 48, 80)).shape == (1, 3, 5)
    layer = pa.attention.TargetLayer("blocks.11.norm1", model.blocks[11].norm1, prefix_tokens=2, patch_size=(16, 16))
    with pytest.raises(ValueError, match=r"returned 16 tokens; expected 2 prefix tokens and a 3x5 grid.*reshape="):
        layer.to_nchw(torch.rand(1, 16, 192), (48, 80))


# -- models as users hold them ----------------------------------------------------------------
def test_data_parallel_compile_and_channels_last(model):
    x = torch.rand(3, 3, 16, 16)
    expect = pa.attention_maps(model, x)
    assert torch.equal(pa.attention_maps(nn.DataParallel(model), x), expect)
    compiled = torch.compile(model, backend="eager")
    assert torch.equal(pa.attention_maps(compiled, x), expect)
    cl = pa.attention_maps(model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, expect, atol=1e-5, rtol=0)


def test_distributed_data_parallel(model, tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(model)
        x = torch.rand(3, 3, 16, 16)
        assert torch.equal(pa.attention_maps(ddp, x), pa.attention_maps(model, x))
        ds = pa.ProxyDataset(TensorDataset(torch.rand(12, 3, 16, 16), torch.arange(12) % 4))
        report = pa.refresh(ddp, ds, fraction=1.0)
        assert report.written == report.wrong and report.layer == "features"
    finally:
        dist.destroy_process_group()


def test_in_the_middle_of_an_amp_step(model):
    x = torch.rand(4, 3, 16, 16)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().sum()
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        maps = pa.attention_maps(model, x, pa.MapSpec("gradcam++"))
    assert maps.dtype == torch.float32 and maps.shape == (4, 8, 8)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert (maps - pa.attention_maps(model, x, pa.MapSpec("gradcam++"))).abs().mean() < 0.05
    assert all(m.training for m in model.modules())


class _Outputs(nn.Module):
    def __init__(self, inner, kind):
        super().__init__()
        self.inner, self.kind = inner, kind

    def forward(self, x):
        lg = self.inner(x)
        if self.kind == "tuple":
            return lg, x.mean()
        if self.kind == "dict":
            return {"logits": lg, "aux": x.mean()}
        if self.kind == "object":
            return type("Output", (), {"logits": lg})()
        return {"scores": lg}


@pytest.mark.parametrize("kind", ["tuple", "dict", "object", "custom"])
def test_models_returning_tuples_dicts_objects(model, kind):
    x = torch.rand(2, 3, 16, 16)
    wrapped = _Outputs(model, kind)
    extract = (lambda out: out["scores"]) if kind == "custom" else None
    maps = pa.attention_maps(wrapped, x, pa.MapSpec(layer="inner.features", logits=extract))
    assert torch.equal(maps, pa.attention_maps(model, x))
    ds = pa.ProxyDataset(TensorDataset(torch.rand(8, 3, 16, 16), torch.arange(8) % 4))
    assert pa.refresh(wrapped, ds, spec=pa.MapSpec(logits=extract), fraction=1.0).written == ds.last_report.wrong


def test_frozen_backbone_with_a_trainable_head(model):
    for p in model.features.parameters():
        p.requires_grad_(False)
    maps = pa.attention_maps(model, torch.rand(2, 3, 16, 16), pa.MapSpec("layercam"))
    assert maps.shape == (2, 8, 8) and all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [False] * 6 + [True, True]


# -- the pytorch-grad-cam adapter -----------------------------------------------------------------
@pytest.mark.parametrize("name, cls", [("scorecam", pgc.ScoreCAM), ("ablationcam", pgc.AblationCAM)])
def test_adapter_equals_pytorch_grad_cam_and_protects_the_model(model, name, cls):
    x = torch.rand(2, 3, 16, 16)
    model.train()
    model.features[1].eval()
    model.head.weight.requires_grad_(False)
    model(x).sum().backward()
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    flags = [m.training for m in model.modules()]
    ours = pa.attention_maps(model, x, pa.MapSpec(name), target=[0, 1], size=(16, 16))
    assert [m.training for m in model.modules()] == flags
    assert all((a is None and p.grad is None) or torch.equal(a, p.grad) for a, p in zip(grads, model.parameters()))
    assert [p.requires_grad for p in model.parameters()][-2:] == [False, True]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    ref = _reference(model, x, cls, resolve_layers(model, None, x), [0, 1])
    model.train()
    assert _max_diff(ours, ref) <= 1e-5
    low = pa.attention_maps(model, x, pa.MapSpec(name))
    assert low.shape == (2, 8, 8)


def test_adapter_takes_a_class_and_propagates_every_exception(model):
    x = torch.rand(2, 3, 16, 16)
    native = pa.attention_maps(model, x, pa.MapSpec("gradcam"), size=(16, 16))
    theirs = pa.attention_maps(model, x, pa.MapSpec(pgc.GradCAM), size=(16, 16))
    assert (native - theirs).abs().max() <= 1e-5

    def explode(module, inputs, output):
        raise IndexError("swallowed by pytorch-grad-cam's context manager, not by us")

    handle = model.head.register_forward_hook(explode)
    with pytest.raises(IndexError, match="not by us"):
        pa.attention_maps(model, x, pa.MapSpec("scorecam"))
    handle.remove()
    assert all(not m._forward_hooks for m in model.modules())


def test_refresh_with_an_adapter_method(model, base):
    ds = pa.ProxyDataset(base)
    report = pa.refresh(model, ds, spec=pa.MapSpec("scorecam"), fraction=0.5, seed=0)
    assert report.method == "scorecam" and report.written == report.chosen > 0
    assert ds.bank.resolution == (8, 8)


# -- selection policies -------------------------------------------------------------------------
def _scan(model, base):
    model.eval()
    with torch.no_grad():
        logits = model(base.tensors[0])
    return logits, base.tensors[1]


@pytest.mark.parametrize("select", ["loss", "margin", "entropy"])
def test_ranking_policies_pick_the_top_scores(model, base, select):
    logits, labels = _scan(model, base)
    n_wrong = int((logits.argmax(1) != labels).sum())
    p = logits.softmax(1)
    score = {
        "loss": nn.functional.cross_entropy(logits, labels, reduction="none"),
        "margin": -(p.topk(2).values[:, 0] - p.topk(2).values[:, 1]),
        "entropy": -(p * p.log()).sum(1),
    }[select]
    k = budget_size(None, wrong=n_wrong, scanned=n_wrong, fraction=0.3)
    expect = score.argsort(descending=True)[:k].sort().values
    ds = pa.ProxyDataset(base)
    report = pa.refresh(model, ds, select=select, fraction=0.3)
    assert report.select == select and report.chosen == k
    assert torch.equal(report.indices, expect)


def test_random_control_matches_the_count_and_draws_from_all(model, base):
    wrong = pa.refresh(model, pa.ProxyDataset(base), select="wrong", fraction=0.5, seed=4)
    draws = [pa.refresh(model, pa.ProxyDataset(base), select="random", fraction=0.5, seed=s) for s in range(8)]
    assert all(d.chosen == wrong.chosen for d in draws)
    assert torch.equal(draws[0].indices, pa.refresh(model, pa.ProxyDataset(base), select="random", fraction=0.5, seed=0).indices)
    logits, labels = _scan(model, base)
    correct = set((logits.argmax(1) == labels).nonzero().flatten().tolist())
    assert any(set(d.indices.tolist()) & correct for d in draws)  # the control is not limited to mistakes


@pytest.mark.parametrize("method", sorted(REFERENCE))
def test_a_target_layer_called_twice_is_read_at_its_first_call_as_pytorch_grad_cam_reads_it(method):
    model, x = SharedBlock(), torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    spec = pa.MapSpec(method, layer="block")
    ours = pa.attention_maps(model, x, spec, target=[0, 1, 2, 3], size=(16, 16))
    flipped = None
    if method.startswith("eigen"):  # pytorch-grad-cam's eigenvector sign is arbitrary
        original = cam_module.eigen_projection
        cam_module.eigen_projection = functools.partial(original, flip=True)
        try:
            flipped = pa.attention_maps(model, x, spec, target=[0, 1, 2, 3], size=(16, 16))
        finally:
            cam_module.eigen_projection = original
    ref = _reference(model, x, REFERENCE[method], resolve_layers(model, "block", None), [0, 1, 2, 3])
    assert _max_diff(ours, ref, flipped) <= 1e-4
    assert ref.amax(dim=(1, 2)).gt(0.5).sum() >= 3
