"""Transformer-native maps (proxyaug/attention/transformer.py): attention rollout and LeGrad on timm
and torchvision ViTs against explicit per-image computations written from the papers (attention
recomputed from the blocks' weights, no hook) and against torchcam's LeGrad; batched = per image;
the model left as found, on success and on error; used by refresh; bad inputs named."""

import pytest
import torch
from torch import nn

import proxyaug as pa
from proxyaug.attention import attention_maps, legrad_relevance, rollout

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


def _timm_vit(global_pool="token", class_token=True):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=28, patch_size=4, in_chans=1, num_classes=10,
                             depth=3, embed_dim=48, num_heads=3, global_pool=global_pool, class_token=class_token).eval()


def _tv_vit():
    torch.manual_seed(0)
    m = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5)
    nn.init.normal_(m.heads.head.weight, std=0.5)  # torchvision starts the head at zero: every score, and LeGrad, would be 0
    return m.eval()


def _block_inputs(model, blocks, x):
    """Each block's input tokens, recorded by plain hooks (the model's own fused forward)."""
    seen = []
    handles = [b.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach())) for b in blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _timm_attention(block, tokens):
    """Post-softmax attention of a timm block from its weights: softmax(q k^T / sqrt(d))."""
    a = block.attn
    n, c = tokens.shape
    qkv = a.qkv(block.norm1(tokens)).reshape(n, 3, a.num_heads, c // a.num_heads).permute(1, 2, 0, 3)
    q, k, v = qkv[0], qkv[1], qkv[2]
    return ((q * a.scale) @ k.transpose(-2, -1)).softmax(dim=-1), v


def _timm_block_from(block, tokens, probs, v):
    """The block's output tokens with ``probs`` as its attention."""
    n, c = tokens.shape
    o = block.attn.proj((probs @ v).transpose(0, 1).reshape(n, c))
    mid = tokens + o
    return mid + block.mlp(block.norm2(mid))


def _min_max(m):
    return (m - m.min()) / (m.max() - m.min() + 1e-7)


def test_rollout_equals_the_papers_recursion_per_image():
    model, x = _timm_vit(), torch.randn(3, 1, 28, 28)
    got = attention_maps(model, x, pa.MapSpec("rollout"))
    for i, tokens in enumerate(zip(*[t for t in _block_inputs(model, model.blocks, x)])):
        r = torch.eye(tokens[0].shape[0])
        for block, t in zip(model.blocks, tokens):
            with torch.no_grad():
                a = _timm_attention(block, t)[0].mean(dim=0)
            a = 0.5 * a + 0.5 * torch.eye(a.shape[0])
            r = (a / a.sum(dim=-1, keepdim=True)) @ r
        ref = _min_max(r[0, 1:].reshape(7, 7))
        torch.testing.assert_close(got[i], ref, atol=1e-5, rtol=1e-4)


def test_legrad_equals_the_papers_gradient_per_image():
    model, x, target = _timm_vit(), torch.randn(3, 1, 28, 28), torch.tensor([1, 4, 7])
    got = attention_maps(model, x, pa.MapSpec("legrad"), target=target)
    inputs = _block_inputs(model, model.blocks, x)
    for i in range(x.shape[0]):
        per_layer = []
        for block, t in zip(model.blocks, inputs):
            with torch.no_grad():
                probs, v = _timm_attention(block, t[i])
            probs.requires_grad_(True)
            z = _timm_block_from(block, t[i], probs, v)
            score = model.head(model.fc_norm(model.norm(z.mean(dim=0))))[target[i]]  # LeGrad's score of this block
            g, = torch.autograd.grad(score, probs)
            per_layer.append(g.clamp_min(0).mean(dim=(0, 1))[1:])
        ref = _min_max(torch.stack(per_layer).mean(dim=0).reshape(7, 7))
        torch.testing.assert_close(got[i], ref, atol=1e-5, rtol=1e-4)


def test_legrad_equals_torchcam_on_a_torchvision_vit():
    torchcam = pytest.importorskip("torchcam.methods")
    model, x = _tv_vit(), torch.randn(3, 3, 32, 32)
    ours = attention_maps(model, x, pa.MapSpec("legrad"), target=[1, 2, 3])
    with torchcam.LeGrad(model, list(model.encoder.layers)) as extractor:
        with torch.enable_grad():
            ref = extractor([1, 2, 3], model(x))[0]
    assert ours.shape == (3, 4, 4) and float(ours.amax()) > 0  # a real map, not zeros on both sides
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("build", [_timm_vit, _tv_vit, lambda: _timm_vit(global_pool="avg", class_token=False)], ids=["timm", "torchvision", "timm-noprefix"])
@pytest.mark.parametrize("method", ["rollout", "legrad"])
def test_batched_equals_one_image_at_a_time_and_blocks_can_be_chosen(build, method):
    model = build()
    side, ch = (32, 3) if isinstance(model, torchvision.models.VisionTransformer) else (28, 1)
    x = torch.randn(3, ch, side, side)
    batch = attention_maps(model, x, pa.MapSpec(method), target=[0, 1, 2])
    alone = torch.cat([attention_maps(model, x[i:i + 1], pa.MapSpec(method), target=[i]) for i in range(3)])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-4)
    names = [n for n, m in model.named_modules() if m in set(getattr(model, "blocks", None) or model.encoder.layers)]
    last = attention_maps(model, x, pa.MapSpec(method, layer=names[-1]), target=[0, 1, 2])
    assert not torch.allclose(last, batch)  # one block is not all of them
    assert attention_maps(model, x, pa.MapSpec(method), size=(side, side), target=[0, 1, 2]).shape == (3, side, side)


@pytest.mark.parametrize("build", [_timm_vit, _tv_vit], ids=["timm", "torchvision"])
@pytest.mark.parametrize("method", ["rollout", "legrad"])
def test_the_model_is_left_as_found_on_success_and_on_error(build, method):
    model = build().train()
    model.blocks[0].eval() if hasattr(model, "blocks") else model.encoder.layers[0].eval()  # a frozen part
    flags = [m.training for m in model.modules()]
    fused = [getattr(m, "fused_attn", None) for m in model.modules()]
    side, ch = (32, 3) if isinstance(model, torchvision.models.VisionTransformer) else (28, 1)
    attention_maps(model, torch.randn(2, ch, side, side), pa.MapSpec(method))
    def boom(module, args, output):
        raise RuntimeError("boom")

    last = model.blocks[-1] if hasattr(model, "blocks") else model.encoder.layers[-1]
    handle = last.register_forward_hook(boom)  # the forward fails after the method's hooks are set
    with pytest.raises(RuntimeError, match="boom"):
        attention_maps(model, torch.randn(2, ch, side, side), pa.MapSpec(method))
    handle.remove()
    for _ in range(2):
        assert [m.training for m in model.modules()] == flags
        assert [getattr(m, "fused_attn", None) for m in model.modules()] == fused
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
        assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert torch.is_grad_enabled()


def test_rollout_and_legrad_of_the_helpers_on_hand_cases():
    a = torch.zeros(1, 1, 3, 3)
    a[0, 0, :, 1] = 1.0  # every token attends to the first patch only
    r = rollout([a], prefix=1)
    assert r[0, 0] > r[0, 1]  # the first patch carries the class token's relevance
    g = torch.zeros(2, 2, 3, 3)
    g[1, :, :, 2] = 3.0
    torch.testing.assert_close(legrad_relevance([g, -g], prefix=1), torch.tensor([[0.0, 0.0], [0.0, 1.5]]))


def test_refresh_uses_them_like_any_method(tmp_path):
    model = _timm_vit()
    images = torch.rand(12, 1, 28, 28)
    base = torch.utils.data.TensorDataset(images, torch.arange(12) % 10)
    ds = pa.ProxyDataset(base)
    for method in ("rollout", "legrad"):
        report = pa.refresh(model, ds, spec=pa.MapSpec(method), select="random", budget=12, batch_size=5, reset=True)
        assert report.written == 12 and report.method == method and ds.bank.resolution == (7, 7)
        want = attention_maps(model, images, pa.MapSpec(method))  # the predicted class, as refresh's default target
        torch.testing.assert_close(ds.bank.maps.float(), want, atol=2e-3, rtol=0)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="vision transformer whose attention"):
        attention_maps(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)),
                       torch.rand(1, 1, 8, 8), pa.MapSpec("rollout", layer="0"))
    with pytest.raises(ValueError, match=r"layer='head' is not a block .*blocks\.0"):
        attention_maps(_timm_vit(), torch.rand(1, 1, 28, 28), pa.MapSpec("legrad", layer="head"))
    with pytest.raises(ValueError, match="eigen_smooth=True is not used by method='rollout'"):
        pa.MapSpec("rollout", eigen_smooth=True)
    assert pa.MapSpec("Roll-out").name == "rollout" and not pa.MapSpec("rollout").needs_grad and pa.MapSpec("legrad").needs_grad
    ds = pa.ProxyDataset(torch.utils.data.TensorDataset(torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ValueError, match="method='legrad' is not valid for capture"):
        pa.MapCapture(ds, spec=pa.MapSpec("legrad"))
