"""Every bad-input case with the error it must raise: tested by test_errors.py, and rendered as
the docs' table by ``python -m tests.error_cases > docs/errors.md`` (a test checks it is current).
"""

from __future__ import annotations

import sys
from typing import Callable, List, NamedTuple, Type

import torch
from torch import nn
from torch.utils.data import TensorDataset

import proxyaug as pa

from .conftest import Items


class Case(NamedTuple):
    area: str
    case: str
    call: Callable[[], object]
    exc: Type[BaseException]
    match: str  # regex the message must match


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _ds(n: int = 8) -> pa.ProxyDataset:
    g = torch.Generator().manual_seed(0)
    return pa.ProxyDataset(TensorDataset(torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)))


def _bank() -> pa.MaskBank:
    bank = pa.MaskBank(6, resolution=(2, 2))
    bank.put(torch.tensor([1]), torch.rand(1, 2, 2))
    return bank


def _proxy(**kw) -> pa.ProxyTransform:
    return pa.ProxyTransform(_bank(), **kw)


def _x(b: int = 2) -> torch.Tensor:
    return torch.rand(b, 3, 8, 8)


def _pil():
    from PIL import Image

    return Image.new("RGB", (4, 4))


def _changed_length():
    items = [(torch.rand(3, 8, 8), 0) for _ in range(4)]
    ds = pa.ProxyDataset(Items(items))
    items.append((torch.rand(3, 8, 8), 1))
    return pa.refresh(_cnn(), ds)


def _uint8_refresh():
    ds = pa.ProxyDataset(Items([(torch.zeros(3, 8, 8, dtype=torch.uint8), 1) for _ in range(4)]))
    return pa.refresh(_cnn(), ds)


class _Segmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def _scores_model() -> nn.Module:
    class Scores(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _cnn()

        def forward(self, x):
            return {"scores": self.net(x)}

    return Scores()


def _in_inference_mode():
    with torch.inference_mode():
        return pa.refresh(_cnn(), _ds())


def _uint8_normalize_only():
    from torchvision.transforms import v2

    ds = pa.ProxyDataset(Items([(torch.zeros(3, 8, 8, dtype=torch.uint8), 1) for _ in range(4)]))
    return pa.refresh(_cnn(), ds, preprocess=v2.Normalize([0.5] * 3, [0.5] * 3))


def _scan_of_0_255():
    g = torch.Generator().manual_seed(0)
    return pa.refresh(_cnn(), pa.ProxyDataset(Items([(torch.rand(3, 8, 8, generator=g) * (255 if i else 1), 0) for i in range(4)])))


def _lightning_unknown_argument():
    from proxyaug.integrations.lightning import ProxyAttention

    return ProxyAttention(_ds(), "1,p", refresh={"blur": 2.0})


class _SetOut(_Segmenter):
    def forward(self, x):
        return {self.conv(x).mean()}


CASES: List[Case] = [
    # settings
    Case("settings", "unknown mode", lambda: _proxy(mode="sepia"), ValueError, r"mode='sepia' is not supported; expected one of 'blend', 'black', 'mean', 'blur'"),
    Case("settings", "unknown method", lambda: pa.attention_maps(_cnn(), _x(), pa.MapSpec("nocam")), ValueError, r"method='nocam' is not supported; expected one of 'gradcam', 'gradcam\+\+'.*'rollout', 'legrad' \(native\)"),
    Case("settings", "unknown select", lambda: pa.refresh(_cnn(), _ds(), select="hardest"), ValueError, r"select='hardest' is not supported; expected one of 'wrong', 'loss', 'margin', 'entropy', 'random'"),
    Case("settings", "unknown target", lambda: pa.refresh(_cnn(), _ds(), target="other"), ValueError, r"target='other' is not supported"),
    Case("settings", "threshold out of range", lambda: _proxy(threshold=1.5), ValueError, r"threshold=1.5 is out of range; expected a number in \[0, 1\]"),
    Case("settings", "threshold not a number", lambda: _proxy(threshold="high"), TypeError, r"threshold must be a number in \[0, 1\]; got 'high'"),
    Case("settings", "weight out of range", lambda: _proxy(weight=-0.1), ValueError, r"weight=-0.1 is out of range"),
    Case("settings", "p out of range", lambda: _proxy(p=2), ValueError, r"p=2.0 is out of range"),
    Case("settings", "fraction out of range", lambda: pa.refresh(_cnn(), _ds(), fraction=0), ValueError, r"fraction=0.0 is out of range; expected a number in \(0, 1\]"),
    Case("settings", "budget not a share or count", lambda: pa.refresh(_cnn(), _ds(), budget=0), ValueError, r"budget=0 is not valid; expected None \(the thesis rule: fraction of the wrong images\), a float in \(0, 1\] \(a share of the scanned images\) or an int >= 1 \(a count\)"),
    Case("settings", "budget a float count", lambda: pa.refresh(_cnn(), _ds(), budget=100.0), ValueError, r"budget=100.0 is not valid; a float is a share of the scanned images, in \(0, 1\]; for a count of images pass an int \(budget=100\)"),
    Case("settings", "budget not a number", lambda: pa.refresh(_cnn(), _ds(), budget="all"), TypeError, r"budget must be None \(the thesis rule: fraction of the wrong images\), .*; got 'all' \(str\)"),
    Case("settings", "blur_sigma not positive", lambda: _proxy(mode="blur", blur_sigma=0), ValueError, r"blur_sigma=0 is not valid"),
    Case("settings", "batch_size not positive", lambda: pa.refresh(_cnn(), _ds(), batch_size=0), ValueError, r"batch_size=0 is not valid; expected a positive integer"),
    Case("settings", "preprocess not callable", lambda: pa.refresh(_cnn(), _ds(), preprocess="normalize"), TypeError, r"preprocess must be callable"),
    # images
    Case("images", "batch not (B, C, H, W)", lambda: _proxy()(torch.rand(3, 8, 8), torch.tensor([0, 1, 2])), ValueError, r"x must have shape \(B, C, H, W\); got shape \(3, 8, 8\)"),
    Case("images", "batch not a tensor", lambda: _proxy()([[0.0]], torch.tensor([0])), TypeError, r"x must be a tensor of shape \(B, C, H, W\); got a list"),
    Case("images", "integer batch other than uint8", lambda: _proxy()(torch.zeros(2, 3, 8, 8, dtype=torch.int32), torch.tensor([0, 1])), TypeError, r"uint8 tensor in \[0, 255\]; got dtype torch.int32"),
    Case("images", "normalised batch at the transform's first call", lambda: _proxy()(_x() * 4 - 2, torch.tensor([0, 1])), ValueError, r"the values of x lie in \[.*\]; expected float images in \[0, 1\]\. They look normalised"),
    Case("images", "scanned images in 0..255", _scan_of_0_255, ValueError, r"the values of the scanned images lie in \[.*, 25\d.*\]; expected float images in \[0, 1\]\. They look like 0\.\.255"),
    # indices
    Case("indices", "idx of the wrong length", lambda: _proxy()(_x(), torch.tensor([0, 1, 2])), ValueError, r"idx has 3 entries but the batch has 2 samples"),
    Case("indices", "idx of a float dtype", lambda: _proxy()(_x(), torch.tensor([0.0, 1.0])), TypeError, r"idx must hold integer sample indices; got dtype torch.float32"),
    Case("indices", "idx negative", lambda: _proxy()(_x(), torch.tensor([-1, 0])), IndexError, r"idx contains -1, out of range for a bank of 6 samples; expected indices in \[0, 5\]"),
    Case("indices", "idx out of range", lambda: _proxy()(_x(), torch.tensor([0, 6])), IndexError, r"idx contains 6, out of range for a bank of 6 samples"),
    Case("indices", "idx not 1-D", lambda: _proxy()(_x(), torch.tensor([[0, 1]])), ValueError, r"idx must be 1-D with one index per sample; got shape \(1, 2\)"),
    Case("indices", "refresh indices out of range", lambda: pa.refresh(_cnn(), _ds(), indices=[0, 99]), IndexError, r"indices contains 99, out of range for a bank of 8 samples"),
    # bank
    Case("bank", "bank of size zero", lambda: pa.MaskBank(0), ValueError, r"num_samples=0 is not valid; expected a positive integer"),
    Case("bank", "load_state_dict of another size", lambda: pa.MaskBank(5).load_state_dict(_bank().state_dict()), ValueError, r"state_dict is of a bank of 6 samples but this bank has 5"),
    Case("bank", "load_state_dict of another resolution into shared memory", lambda: _bank().share_memory().load_state_dict(pa.MaskBank(6, resolution=(3, 3)).state_dict()), ValueError, r"state_dict holds maps of resolution \(3, 3\) but this bank stores \(2, 2\) in shared memory"),
    Case("bank", "load_state_dict with assign=True into shared memory", lambda: _bank().share_memory().load_state_dict(_bank().state_dict(), assign=True), ValueError, r"assign=True would replace the bank's tensors, but this bank is in shared memory"),
    Case("bank", "load_state_dict of a malformed state", lambda: _bank().load_state_dict({"maps": torch.zeros(6, 4), "present": torch.zeros(6, dtype=torch.bool)}), ValueError, r"state_dict holds maps \(6, 4\) and present \(6,\); expected \(N, h, w\) and \(N,\)"),
    Case("bank", "maps with NaN or inf", lambda: _bank().put(torch.tensor([0]), torch.full((1, 2, 2), float("nan"))), ValueError, r"maps contain NaN or inf; expected finite values in \[0, 1\]"),
    Case("bank", "maps outside [0, 1]", lambda: _bank().put(torch.tensor([0]), torch.full((1, 2, 2), 3.0)), ValueError, r"maps hold values in \[3, 3\]; expected \[0, 1\]"),
    Case("bank", "maps of another resolution", lambda: _bank().put(torch.tensor([0]), torch.rand(1, 3, 3)), ValueError, r"maps have resolution \(3, 3\) but the bank stores \(2, 2\)"),
    Case("bank", "repeated indices in put", lambda: _bank().put(torch.tensor([0, 0]), torch.rand(2, 2, 2)), ValueError, r"idx contains repeated indices"),
    Case("bank", "a cast of a bank in shared memory", lambda: _bank().share_memory().float(), ValueError, r"bank.float\(\) would cast the maps to torch.float32, but this bank stores torch.float16 in shared memory.*Build the dataset with dtype=torch.float32 instead"),
    Case("bank", "a move of a bank in shared memory", lambda: pa.ProxyTransform(_bank().share_memory()).to("meta"), ValueError, r"moving the module that holds it would move the maps to meta, but this bank lives in shared memory on the CPU"),
    Case("bank", "a transform over something else", lambda: pa.ProxyTransform(torch.zeros(3)), TypeError, r"bank must be a proxyaug.MaskBank"),
    # dataset
    Case("dataset", "item is a PIL image", lambda: pa.ProxyDataset(Items([(_pil(), 0)]))[0], TypeError, r"dataset\[0\] returned an image that is a PIL.Image.Image; expected a float tensor \(C, H, W\) in \[0, 1\]"),
    Case("dataset", "item is a bare tensor (no label)", lambda: pa.ProxyDataset(Items([torch.rand(3, 4, 4)]))[0], TypeError, r"dataset\[0\] returned a tensor of shape \(3, 4, 4\)"),
    Case("dataset", "item is a mapping without 'image'", lambda: pa.ProxyDataset(Items([{"img": torch.rand(3, 4, 4), "label": 0}])), TypeError, r"dataset\[0\] returned a mapping with the keys \['img', 'label'\]; expected the keys 'image' and 'label' \(or a pair \(image, label\)\). Rename the columns \(hf_dataset.rename_column\('img', 'image'\)\)"),
    Case("dataset", "item is a mapping with a key 'idx'", lambda: pa.ProxyDataset(Items([{"image": torch.rand(3, 4, 4), "label": 0, "idx": 7}])), ValueError, r"dataset\[0\] has a key 'idx' already; ProxyDataset adds each item's bank row under 'idx'"),
    Case("dataset", "label is not a class index", lambda: pa.ProxyDataset(Items([(torch.rand(3, 4, 4), 0.5)]))[0], TypeError, r"label that is a float; expected an integer class index"),
    Case("dataset", "item 0 normalised already", lambda: pa.ProxyDataset(Items([(torch.full((3, 4, 4), -1.5), 0)])), ValueError, r"the values of dataset\[0\] lie in \[-1.5, -1.5\]; expected float images in \[0, 1\]\. They look normalised"),
    Case("dataset", "item 0 in 0..255", lambda: pa.ProxyDataset(Items([(torch.full((3, 4, 4), 200.0), 0)])), ValueError, r"the values of dataset\[0\] lie in \[200, 200\]; expected float images in \[0, 1\]\. They look like 0\.\.255"),
    Case("dataset", "item 0 a triple", lambda: pa.ProxyDataset(Items([(torch.rand(3, 4, 4), 0, "path")])), TypeError, r"dataset\[0\] returned a tuple of 3 items; expected \(image tensor \(C, H, W\), label\)"),
    Case("dataset", "uint8 images, preprocess without ToDtype", _uint8_normalize_only, TypeError, r"preprocess failed on the dataset's torch.uint8 images .*v2.ToDtype\(torch.float32, scale=True\)"),
    Case("dataset", "CPU path at a resolution the model does not give", lambda: pa.ProxyDataset(_ds().dataset, resolution=(2, 2)).enable_cpu_path(model=_cnn()), ValueError, r"the bank stores maps at \(2, 2\) but the model's target layer gives \(8, 8\) on item 0"),
    Case("dataset", "refresh on another device than the model", lambda: pa.refresh(_cnn(), _ds(), device="meta"), ValueError, r"device='meta' but the model's parameters are on cpu"),
    Case("dataset", "refresh under torch.inference_mode()", _in_inference_mode, RuntimeError, r"refresh\(spec=MapSpec\('gradcam\+\+'\)\) needs gradients, which torch.inference_mode\(\) disables"),
    Case("dataset", "Lightning callback with an argument refresh() does not take", _lightning_unknown_argument, TypeError, r"refresh= holds \['blur'\], which refresh\(\) does not take"),
    Case("dataset", "uint8 images and no preprocess", _uint8_refresh, TypeError, r"the dataset yields torch.uint8 images; pass preprocess="),
    Case("dataset", "dataset changed length", _changed_length, RuntimeError, r"the dataset has 5 samples but its bank was made for 4"),
    Case("dataset", "empty dataset", lambda: pa.ProxyDataset(Items([])), ValueError, r"dataset is empty"),
    Case("dataset", "unknown proxies option", lambda: pa.ProxyDataset(Items([(torch.rand(3, 4, 4), 0)]), proxies="extra"), ValueError, r"proxies='extra' is not supported; expected one of 'replace', 'append'"),
    Case("dataset", "append mode with a bank of len(dataset)", lambda: pa.ProxyDataset(Items([(torch.rand(3, 4, 4), 0)] * 3), pa.MaskBank(3), proxies="append"), ValueError, r"bank must be a MaskBank of 2 \* len\(dataset\)=6 rows \(proxies='append'\); got a bank of 3 samples"),
    Case("dataset", "append mode: an extra slot whose sample has no map", lambda: pa.ProxyDataset(_ds().dataset, proxies="append")[8 + 3], IndexError, r"item 11 is the extra slot of sample 3, which holds no map: .*Draw with proxyaug.ProxySampler\(ds\)"),
    Case("dataset", "ProxySampler over a plain dataset", lambda: pa.ProxySampler(TensorDataset(_x(), torch.zeros(2))), TypeError, r"ds must be a proxyaug.ProxyDataset \(anything with live_items\(\)\); got TensorDataset"),
    Case("dataset", "ProxySampler rank outside the group", lambda: list(pa.ProxySampler(_ds(), num_replicas=2, rank=2)), ValueError, r"rank=2 is not valid for num_replicas=2; expected 0 <= rank < 2"),
    Case("dataset", "state of another dataset's observations", lambda: _ds().load_state_dict({**_ds(5).state_dict(), "bank": _ds().state_dict()["bank"]}), ValueError, r"state records observations of a tensor of shape \(5,\) and dtype torch.bool; this dataset has 8 samples"),
    Case("dataset", "refresh on a plain dataset", lambda: pa.refresh(_cnn(), TensorDataset(_x(), torch.zeros(2))), TypeError, r"ds must be a proxyaug.ProxyDataset"),
    # model
    Case("model", "model with no spatial layer", lambda: pa.attention_maps(nn.Sequential(nn.Flatten(), nn.Linear(192, 3)), _x()), ValueError, r"could not find a target layer in Sequential.*Pass MapSpec\(layer="),
    Case("model", "layer name not in the model", lambda: pa.attention_maps(_cnn(), _x(), pa.MapSpec(layer="layer4")), ValueError, r"layer='layer4' is not a module of Sequential"),
    Case("model", "layer module not in the model", lambda: pa.attention_maps(_cnn(), _x(), pa.MapSpec(layer=nn.Conv2d(3, 3, 1))), ValueError, r"layer=Conv2d is not a submodule of Sequential"),
    Case("model", "layer without a spatial output", lambda: pa.attention_maps(_cnn(), _x(), pa.MapSpec(layer="4")), ValueError, r"the target layer '4' \(Linear\) returned \(2, 3\); expected a \(B, C, h, w\) tensor.*reshape="),
    Case("model", "model output is not logits", lambda: pa.attention_maps(_Segmenter(), _x(), pa.MapSpec(layer="conv")), ValueError, r"the model returned \(2, 3, 8, 8\); expected logits of shape \(B, num_classes\)"),
    Case("model", "layer list empty", lambda: pa.attention_maps(_cnn(), _x(), pa.MapSpec(layer=[])), ValueError, r"layer=\[\] is empty"),
    Case("model", "reshape not callable", lambda: pa.attention_maps(_cnn(), _x(), pa.MapSpec(reshape=3)), TypeError, r"reshape must be a callable"),
    Case("model", "output is a dict without 'logits'", lambda: pa.attention_maps(_scores_model(), _x()), TypeError, r"the model returned a dict with keys \['scores'\]; expected logits under the key 'logits'"),
    Case("model", "output holds no logits", lambda: pa.attention_maps(_SetOut(), _x(), pa.MapSpec(layer="conv")), TypeError, r"the model returned a set; expected logits.*Pass MapSpec\(logits="),
    Case("model", "smooth_sigma not positive", lambda: pa.attention_maps(_cnn(), _x(), pa.MapSpec(smooth_sigma=-1.0)), ValueError, r"smooth_sigma=-1.0 is not valid"),
    Case("model", "method given as a class that is not a CAM", lambda: pa.attention_maps(_cnn(), _x(), pa.MapSpec(nn.Conv2d)), TypeError, r"method=Conv2d is not a pytorch-grad-cam CAM class"),
    Case("model", "target class out of range", lambda: pa.attention_maps(_cnn(), _x(), target=7), ValueError, r"target holds classes in \[7, 7\] but the model has 3 outputs"),
    # metrics
    Case("metrics", "maps and regions of mismatched shapes", lambda: pa.metrics.energy_in_region(torch.rand(2, 4, 4), torch.ones(3, 8, 8, dtype=torch.bool)), ValueError, r"maps of shape \(2, 4, 4\) and regions of shape \(3, 8, 8\) do not match; expected regions \(B=2, H, W\) with H >= 4 and W >= 4"),
    Case("metrics", "regions smaller than the maps", lambda: pa.metrics.pointing_game(torch.rand(1, 8, 8), torch.ones(1, 4, 4, dtype=torch.bool)), ValueError, r"maps of shape \(1, 8, 8\) and regions of shape \(1, 4, 4\) do not match"),
    Case("metrics", "empty region", lambda: pa.metrics.energy_in_region(torch.rand(2, 4, 4), torch.eye(4, dtype=torch.bool).expand(2, 4, 4) & torch.tensor([True, False]).view(2, 1, 1)), ValueError, r"regions of image\(s\) \[1\] are empty; expected at least one pixel in each region"),
    Case("metrics", "regions not a bool mask", lambda: pa.metrics.pointing_game(torch.rand(1, 4, 4), torch.ones(1, 4, 4)), TypeError, r"regions must be a bool mask; got dtype torch.float32"),
    Case("metrics", "maps with NaN or inf", lambda: pa.metrics.sparsity(torch.tensor([[[1.0]], [[float("nan")]]])), ValueError, r"maps contain NaN or inf in image\(s\) \[1\]; expected finite values"),
    Case("metrics", "maps of an integer dtype", lambda: pa.metrics.entropy(torch.ones(1, 2, 2, dtype=torch.int64)), TypeError, r"maps must be a floating-point tensor; got dtype torch.int64"),
    Case("metrics", "maps not (B, h, w)", lambda: pa.metrics.entropy(torch.rand(4, 4)), ValueError, r"maps must have shape \(B, h, w\) or \(B, 1, h, w\); got shape \(4, 4\)"),
    Case("metrics", "negative maps", lambda: pa.metrics.energy_in_region(torch.full((1, 2, 2), -1.0), torch.ones(1, 2, 2, dtype=torch.bool)), ValueError, r"maps hold values in \[-1, -1\]; expected non-negative values"),
    Case("metrics", "maps outside [0, 1] for average drop", lambda: pa.metrics.average_drop_increase(_cnn(), _x(), torch.full((2, 2, 2), 2.0)), ValueError, r"maps hold values in \[2, 2\]; expected \[0, 1\]"),
    Case("metrics", "one map per image missing", lambda: pa.metrics.deletion_curve(_cnn(), _x(), torch.rand(3, 2, 2)), ValueError, r"maps hold 3 maps but x holds 2 images; expected one map per image"),
    Case("metrics", "steps < 1", lambda: pa.metrics.deletion_curve(_cnn(), _x(), torch.rand(2, 2, 2), steps=0), ValueError, r"steps=0 is not valid; expected a positive integer"),
    Case("metrics", "unknown baseline", lambda: pa.metrics.insertion_curve(_cnn(), _x(), torch.rand(2, 2, 2), baseline="noise"), ValueError, r"baseline='noise' is not supported; expected one of 'zeros', 'blur', 'mean'"),
    Case("metrics", "target out of range", lambda: pa.metrics.deletion_curve(_cnn(), _x(), torch.rand(2, 2, 2), target=5), ValueError, r"target holds classes in \[5, 5\] but the model has 3 outputs; expected \[0, 2\]"),
    Case("metrics", "negative pointing-game tolerance", lambda: pa.metrics.pointing_game(torch.rand(1, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool), tolerance=-1), ValueError, r"tolerance=-1 is not valid; expected a non-negative integer number of pixels"),
    Case("metrics", "auc of a one-point curve", lambda: pa.metrics.auc(torch.ones(2, 1)), ValueError, r"curve must be a floating tensor \(\.\.\., steps \+ 1\) with at least 2 points; got shape \(2, 1\)"),
    Case("metrics", "load_state_dict of a malformed state", lambda: pa.metrics.Sparsity().load_state_dict({"sparsity": torch.zeros(2), "count": torch.zeros(())}), ValueError, r"state holds sparsity=a tensor of shape \(2,\) and dtype torch.float32; Sparsity keeps a 0-d tensor there"),
    Case("metrics", "compute() before any update()", lambda: pa.metrics.Entropy().compute(), RuntimeError, r"Entropy.compute\(\) has no images to average; call update\(\) with a batch first"),
    Case("metrics", "two sets of maps of other batch sizes", lambda: pa.metrics.map_spearman(torch.rand(2, 4, 4), torch.rand(3, 4, 4)), ValueError, r"a holds 2 maps but b holds 3; expected one map of each per image"),
    Case("metrics", "a common grid that is not (h, w)", lambda: pa.metrics.topk_iou(torch.rand(1, 4, 4), torch.rand(1, 4, 4), size=(0, 3)), ValueError, r"size=\(0, 3\) is not valid; expected None \(the finer grid of the two\), a positive int or a pair \(h, w\) of positive ints"),
    Case("metrics", "top-k fraction of 0", lambda: pa.metrics.topk_iou(torch.rand(1, 4, 4), torch.rand(1, 4, 4), fraction=0), ValueError, r"fraction=0.0 is out of range; expected a number in \(0, 1\]"),
    Case("metrics", "a patch that does not divide the image", lambda: pa.metrics.occlusion_curve(_cnn(), _x(), torch.tensor([0, 1]), patch=3), ValueError, r"patch=3 does not divide the images' size 8 x 8; expected a patch that divides both \(their common divisors: \[1, 2, 4, 8\]\)"),
    Case("metrics", "a fraction outside [0, 1]", lambda: pa.metrics.occlusion_curve(_cnn(), _x(), torch.tensor([0, 1]), patch=2, fractions=(0.5, 1.5)), ValueError, r"fractions=\(0.5, 1.5\) is not valid; expected a non-empty tuple of numbers in \[0, 1\]"),
    Case("metrics", "an unknown drop order", lambda: pa.metrics.occlusion_curve(_cnn(), _x(), torch.tensor([0, 1]), patch=2, order="salient"), ValueError, r"order='salient' is not supported; expected one of 'random'"),
    Case("metrics", "labels outside the model's classes", lambda: pa.metrics.shuffle_accuracy(_cnn(), _x(), torch.tensor([0, 7]), grids=(2,)), ValueError, r"labels hold classes in \[0, 7\] but the model has 3 outputs; expected \[0, 2\]"),
    Case("metrics", "a shuffle grid that does not divide the image", lambda: pa.metrics.shuffle_accuracy(_cnn(), _x(), torch.tensor([0, 1]), grids=(2, 3)), ValueError, r"grids=\(2, 3\) holds 3, which does not divide the images' size 8 x 8"),
    Case("metrics", "right / wrong flags that are not bool", lambda: pa.metrics.error_consistency(torch.ones(3), torch.ones(3, dtype=torch.bool)), TypeError, r"correct_a must be a bool tensor of right / wrong flags; got dtype torch.float32. Make one with e.g. preds == labels"),
    Case("metrics", "right / wrong flags of other lengths", lambda: pa.metrics.error_consistency(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool)), ValueError, r"correct_a holds 3 flags and correct_b 4; expected the same trials, at least one"),
    Case("metrics", "error consistency computed before any update()", lambda: pa.metrics.ErrorConsistency().compute(), RuntimeError, r"ErrorConsistency.compute\(\) has no trials; call update\(\) with a batch first"),
    # schedule
    Case("schedule", "malformed schedule element", lambda: pa.ProxySchedule.parse("5,q,4"), ValueError, r"spec element 1 is 'q'; expected a positive number of epochs or 'p'"),
    Case("schedule", "empty schedule", lambda: pa.ProxySchedule.parse(""), ValueError, r"spec='' is empty"),
    Case("schedule", "schedule of another type", lambda: pa.ProxySchedule.parse(5), TypeError, r"spec must be a string like '5,p,9,p,4'"),
    Case("schedule", "every(0)", lambda: pa.ProxySchedule.every(0), ValueError, r"n=0 is not valid; expected a positive integer"),
    Case("schedule", "negative epoch", lambda: pa.ProxySchedule.parse("2,p").should_refresh(-1), ValueError, r"epoch=-1 is not valid"),
    Case("schedule", "on_plateau without a metric", lambda: pa.ProxySchedule.on_plateau().should_refresh(0), ValueError, r"metric=None is not valid; an on_plateau schedule needs a finite number"),
    Case("schedule", "on_plateau with an infinite metric", lambda: pa.ProxySchedule.on_plateau().should_refresh(0, metric=float("inf")), ValueError, r"metric=inf is not valid; an on_plateau schedule needs a finite number"),
    Case("schedule", "on_plateau with a metric tensor of several values", lambda: pa.ProxySchedule.on_plateau().should_refresh(0, metric=torch.tensor([0.5, 0.6])), ValueError, r"metric=tensor\(\[0.5000, 0.6000\]\) is not valid; an on_plateau schedule needs a finite number each epoch \(a float, a 0-d tensor or a numpy scalar\)"),
]


def message(case: Case) -> str:
    try:
        case.call()
    except case.exc as err:  # noqa: PERF203
        return str(err)
    raise AssertionError(f"{case.case}: no {case.exc.__name__} raised")


def render() -> str:
    lines = [
        "# Errors",
        "",
        "Every bad input proxyaug refuses, with the exact message it gives. Generated by",
        "`python -m tests.error_cases > docs/errors.md` from the cases that `tests/test_errors.py` runs;",
        "a test fails when this page and the code disagree.",
        "",
        "A batch on another device than the bank raises `RuntimeError: x is on cuda:0 but the bank is on",
        "cpu; call proxy.to('cuda:0') ...` (tested where CUDA is present).",
        "",
        "| area | case | raises | message |",
        "|---|---|---|---|",
    ]
    for case in CASES:
        text = message(case).replace("|", "\\|")
        lines.append(f"| {case.area} | {case.case} | `{case.exc.__name__}` | {text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
