"""ProxyTransform composes: the index comes inside the input (tuple, list, dict, several arguments),
the same structure comes back with the images replaced, so it sits in nn.Sequential and v2.Compose."""

import collections

import pytest
import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

import proxyaug as pa
from proxyaug import MaskBank, ProxyTransform


@pytest.fixture
def bank(device):
    bank = MaskBank(6, resolution=(4, 4), device=device)
    bank.put(torch.tensor([1, 3]), torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0)))
    return bank


@pytest.fixture
def batch(device):
    """Images on the device; labels and indices on the CPU, as a loader yields them."""
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 3, 16, 16, generator=g).to(device), torch.tensor([7, 8, 9, 5]), torch.tensor([0, 1, 2, 3])


def test_tuples_and_lists_images_first_idx_last(bank, batch):
    x, y, idx = batch
    proxy = ProxyTransform(bank, mode="black", threshold=0.3)
    expect = proxy.replace(x, idx)
    assert not torch.equal(expect, x)
    for given in [(x, idx), (x, y, idx), [x, y, idx], [x, idx]]:
        out = proxy(given)
        assert type(out) is type(given) and len(out) == len(given)
        assert torch.equal(out[0], expect)
        assert all(a is b for a, b in zip(out[1:], given[1:]))  # the rest passes through untouched
    Sample = collections.namedtuple("Sample", "image label idx")
    out = proxy(Sample(x, y, idx))
    assert isinstance(out, Sample) and torch.equal(out.image, expect) and out.label is y


def test_several_arguments_give_a_tuple_as_v2_transforms_do(bank, batch):
    x, y, idx = batch
    proxy = ProxyTransform(bank, mode="black", threshold=0.3)
    out = proxy(x, y, idx)
    assert type(out) is tuple and torch.equal(out[0], proxy.replace(x, idx)) and out[1] is y and out[2] is idx
    out = proxy(x, idx)  # two arguments: a tuple too (0.2); the images alone are proxy.replace(x, idx)
    assert type(out) is tuple and len(out) == 2 and torch.equal(out[0], proxy.replace(x, idx)) and out[1] is idx


def test_dicts_keep_their_type_and_other_keys(bank, batch):
    x, y, idx = batch
    proxy = ProxyTransform(bank, mode="mean", threshold=0.3)
    given = {"label": y, "image": x, "idx": idx, "path": ["a", "b", "c", "d"]}
    out = proxy(given)
    assert type(out) is dict and list(out) == list(given) and out is not given
    assert torch.equal(out["image"], proxy.replace(x, idx)) and given["image"] is x  # the input dict is not changed
    assert out["label"] is y and out["idx"] is idx and out["path"] is given["path"]
    ordered = proxy(collections.OrderedDict(image=x, idx=idx))
    assert isinstance(ordered, collections.OrderedDict)
    default = proxy(collections.defaultdict(list, image=x, idx=idx))
    assert isinstance(default, collections.defaultdict) and default["missing"] == []


def test_a_single_image_chw_with_one_index(bank, batch):
    x, _, idx = batch
    proxy = ProxyTransform(bank, mode="black", threshold=0.3)
    expect = proxy.replace(x, idx)[1]
    for index in (1, torch.tensor(1), torch.tensor([1])):
        out = proxy.replace(x[1], index)
        assert out.shape == (3, 16, 16) and torch.equal(out, expect)
        image, back = proxy(x[1], index)
        assert torch.equal(image, expect) and back is index
    out = proxy({"image": x[1], "idx": 1, "label": 8})
    assert torch.equal(out["image"], expect) and out["label"] == 8
    single = x[1]
    assert ProxyTransform(bank, p=0.0).replace(single, 1) is single  # identity: the very object
    assert ProxyTransform(bank, p=0.0)(single, 1)[0] is single
    assert torch.equal(proxy.replace(x[0], 0), x[0])  # a sample with no map


def test_a_sample_of_the_dataset_goes_through(bank):
    bank.to("cpu")  # a dataset's item, on the CPU (the CPU path's case)
    base = torch.utils.data.TensorDataset(torch.rand(6, 3, 8, 8), torch.arange(6))
    ds = pa.ProxyDataset(base, bank)
    proxy = ProxyTransform(bank, mode="black", threshold=0.3)
    x, y, idx = proxy(ds[3])
    assert x.shape == (3, 8, 8) and not torch.equal(x, ds[3][0]) and (y, idx) == (ds[3][1], ds[3][2])


@pytest.mark.parametrize(
    "inputs, exc, match",
    [
        ((torch.rand(2, 3, 8, 8),), TypeError, r"ProxyTransform needs the images and their idx; got a tensor .* Call proxy\(x, idx\)"),
        (((torch.rand(2, 3, 8, 8),),), TypeError, r"needs the images and their idx; got a tuple"),
        ((), TypeError, r"needs the images and their idx; got nothing"),
        (({"image": torch.rand(2, 3, 8, 8)},), KeyError, r"the batch dict lacks \['idx'\]"),
        (({"img": torch.rand(2, 3, 8, 8), "idx": [0, 1]},), KeyError, r"lacks \['image'\]"),
        ((torch.rand(3, 8, 8), torch.tensor([0, 1])), ValueError, r"x must have shape \(B, C, H, W\); got shape \(3, 8, 8\) and 2 indices in idx, but a single image \(C, H, W\) takes one index"),
        ((torch.rand(3, 8, 8), 1.5), TypeError, r"idx must hold integer sample indices"),
        ((torch.rand(8, 8), torch.tensor([0])), ValueError, r"x must have shape \(B, C, H, W\)"),
        (("not an image", torch.tensor([0])), TypeError, r"x must be a tensor"),
    ],
)
def test_bad_inputs_say_what_to_pass(bank, inputs, exc, match):
    bank.to("cpu")  # the inputs are made at collection, on the CPU
    with pytest.raises(exc, match=match):
        ProxyTransform(bank)(*inputs)


def test_params_must_be_a_dict_by_keyword(bank, batch):
    x, _, idx = batch
    with pytest.raises(TypeError, match=r"params must be the dict forward_parameters\(\) returns; got a tensor"):
        ProxyTransform(bank)(x, idx, params=torch.ones(4, dtype=torch.bool))


def test_in_nn_sequential(bank, batch):
    x, y, idx = batch
    proxy = ProxyTransform(bank, mode="black", threshold=0.3)
    flip = v2.RandomHorizontalFlip(p=1.0)
    pipeline = nn.Sequential(proxy, flip)
    out = pipeline({"image": x, "idx": idx, "label": y})
    assert torch.equal(out["image"], proxy.replace(x, idx).flip(-1)) and out["idx"] is idx and out["label"] is y
    out = nn.Sequential(proxy, ProxyTransform(bank, mode="blend", threshold=0.3))((x, y, idx))
    assert torch.equal(out[0], ProxyTransform(bank, mode="blend", threshold=0.3).replace(proxy.replace(x, idx), idx))


def test_in_v2_compose_a_realistic_gpu_pipeline(bank, batch):
    x, y, idx = batch
    proxy = ProxyTransform(bank, mode="black", threshold=0.3)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.2, 0.2]
    pipeline = v2.Compose([proxy, v2.RandomHorizontalFlip(p=1.0), v2.Normalize(mean, std)])
    expect = v2.functional.normalize(proxy.replace(x, idx).flip(-1), mean, std)
    out = pipeline({"image": x, "idx": idx, "label": y})  # v2 transforms the first plain tensor, passes the rest
    assert torch.equal(out["image"], expect) and torch.equal(out["idx"], idx) and torch.equal(out["label"], y)
    out = pipeline((x, y, idx))  # a loader's batch as one argument
    assert type(out) is tuple and torch.equal(out[0], expect) and out[1] is y and out[2] is idx
    out = pipeline(x, y, idx)  # or as several
    assert torch.equal(out[0], expect) and out[1] is y and out[2] is idx


def test_tv_tensors_image_stays_one_so_v2_never_takes_idx_for_the_image(bank, batch):
    x, _, idx = batch
    proxy = ProxyTransform(bank, mode="black", threshold=0.3)
    pipeline = v2.Compose([proxy, v2.RandomHorizontalFlip(p=1.0)])
    out = pipeline({"idx": idx, "image": tv_tensors.Image(x)})  # idx first: a plain image would lose to it
    assert isinstance(out["image"], tv_tensors.Image) and torch.equal(out["idx"], idx)
    assert torch.equal(out["image"].as_subclass(torch.Tensor), proxy.replace(x, idx).flip(-1))


def test_dataloader_batches_through_compose(bank):
    bank.to("cpu")  # the batches of a CPU loader, transformed before any move
    base = torch.utils.data.TensorDataset(torch.rand(6, 3, 8, 8), torch.arange(6))
    ds = pa.ProxyDataset(base, bank)
    proxy = ProxyTransform(bank, mode="black", threshold=0.3)
    pipeline = v2.Compose([proxy, v2.RandomHorizontalFlip(p=1.0)])
    for batch in torch.utils.data.DataLoader(ds, batch_size=3):
        x, y, idx = pipeline(batch)  # a list [x, y, idx] from the default collate
        assert torch.equal(x, proxy.replace(batch[0], batch[2]).flip(-1)) and torch.equal(y, batch[1])


# -- structure in, structure out: every call form through a random v2 pipeline ----------------------
Sample = collections.namedtuple("Sample", "image label idx")

# name: (the arguments from (x, y, idx), the images of the output, the idx of the output)
CALL_FORMS = {
    "two arguments": (lambda x, y, idx: (x, idx), lambda out: out[0], lambda out: out[1]),
    "three arguments": (lambda x, y, idx: (x, y, idx), lambda out: out[0], lambda out: out[2]),
    "tuple": (lambda x, y, idx: ((x, y, idx),), lambda out: out[0], lambda out: out[2]),
    "list": (lambda x, y, idx: ([x, idx],), lambda out: out[0], lambda out: out[1]),
    "namedtuple": (lambda x, y, idx: (Sample(x, y, idx),), lambda out: out.image, lambda out: out.idx),
    "dict": (lambda x, y, idx: ({"image": x, "idx": idx, "label": y},), lambda out: out["image"], lambda out: out["idx"]),
    "single image": (lambda x, y, idx: (x[1], 1), lambda out: out[0], lambda out: out[1]),
}


@pytest.mark.parametrize("container", ["v2.Compose", "nn.Sequential"])
@pytest.mark.parametrize("form", list(CALL_FORMS))
def test_every_call_form_keeps_its_structure_through_random_transforms(bank, batch, form, container):
    """Every image gets the random draw that the images alone get, and idx comes back as the same object."""
    make, images_of, idx_of = CALL_FORMS[form]
    x, y, idx = batch
    given = make(x, y, idx)
    if container == "nn.Sequential" and len(given) > 1:
        pytest.skip("nn.Sequential passes one argument")
    images, rows = (x[1], 1) if form == "single image" else (x, idx)
    proxy = ProxyTransform(bank, mode="black", threshold=0.3, p=0.5)  # random too: the draws must line up
    tail = [v2.RandomResizedCrop(12, scale=(0.3, 1.0), antialias=False), v2.RandomHorizontalFlip(p=0.5)]
    pipeline = v2.Compose([proxy, *tail]) if container == "v2.Compose" else nn.Sequential(proxy, *tail)
    for seed in range(4):
        torch.manual_seed(seed)
        out = pipeline(*given)
        torch.manual_seed(seed)  # the same draws, replayed on the images alone
        expect = v2.Compose(tail)(proxy.replace(images, rows))
        assert type(out) is (tuple if len(given) > 1 else type(given[0]))
        assert images_of(out).shape == expect.shape == images.shape[:-2] + (12, 12)
        for i, (got, want) in enumerate(zip(images_of(out).view(-1, 3, 12, 12), expect.view(-1, 3, 12, 12))):
            assert torch.equal(got, want), f"seed {seed}: image {i} differs from the replayed draw"
        assert idx_of(out) is rows


def test_replace_checks_as_the_call_does(bank, batch):
    x, _, idx = batch
    proxy = ProxyTransform(bank)
    with pytest.raises(ValueError, match=r"idx has 3 entries but the batch has 4 samples"):
        proxy.replace(x, idx[:3])
    with pytest.raises(TypeError, match=r"params must be the dict forward_parameters\(\) returns; got a tensor"):
        proxy.replace(x, idx, params=torch.ones(4, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"x must be a tensor"):
        proxy.replace("not an image", idx)
