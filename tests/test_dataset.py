import pickle

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import proxyaug as pa

from .conftest import Items


def test_yields_x_y_idx_and_forwards_attributes(base):
    ds = pa.ProxyDataset(base)
    x, y, i = ds[3]
    assert torch.equal(x, base[3][0]) and int(y) == int(base[3][1]) and i == 3
    assert ds[-1][2] == 39
    assert ds.tensors is base.tensors
    assert pa.ProxyDataset(Items([(torch.rand(1, 2, 2), 0)])).classes == ["zero", "one"]
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        ds.nothing


def test_pickles_with_its_bank(base):
    ds = pa.ProxyDataset(base)
    ds.bank.put(torch.tensor([1]), torch.rand(1, 3, 3))
    again = pickle.loads(pickle.dumps(ds))
    assert len(again) == 40 and torch.equal(again.bank.maps, ds.bank.maps)
    assert torch.equal(again[5][0], ds[5][0])


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_workers(base, workers):
    ds = pa.ProxyDataset(base)
    loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0))
    seen = []
    for x, y, idx in loader:
        assert x.shape == (8, 3, 16, 16) and idx.dtype == torch.int64
        assert torch.equal(x, base.tensors[0][idx]) and torch.equal(y, base.tensors[1][idx])
        seen.append(idx)
    assert sorted(torch.cat(seen).tolist()) == list(range(40))


def test_loop_with_transform_uses_indices(model, base, device):
    ds = pa.ProxyDataset(base, device=device)
    pa.refresh(model.to(device), ds, fraction=1.0)
    proxy = pa.ProxyTransform(ds.bank, mode="black", threshold=0.5)
    for x, _, idx in DataLoader(ds, batch_size=10):
        x = x.to(device)
        out = proxy.replace(x, idx)
        present = ds.bank.present[idx]
        unchanged = (out == x).flatten(1).all(1)
        assert torch.equal(unchanged[~present], torch.ones_like(unchanged[~present]))
        assert not unchanged[present].any()


@pytest.mark.parametrize(
    "item, match",
    [
        ({"pixels": torch.rand(3, 4, 4), "target": 0}, r"dataset\[0\] returned a mapping with the keys \['pixels', 'target'\]; expected the keys 'image' and 'label'"),
        (torch.rand(3, 4, 4), r"dataset\[0\] returned a tensor of shape \(3, 4, 4\).*expected \(image tensor \(C, H, W\), label\)"),
        ((torch.rand(3, 4, 4),), r"returned a tuple of 1 items"),
        ((torch.rand(4, 4), 0), r"image of shape \(4, 4\) and dtype torch.float32; expected a tensor \(C, H, W\)"),
        ((torch.zeros(3, 4, 4, dtype=torch.int32), 0), r"dtype torch.int32.*float in \[0, 1\] or uint8"),
        ((torch.rand(3, 4, 4), 0.5), r"label that is a float; expected an integer class index"),
    ],
)
def test_bad_items(item, match):
    with pytest.raises(TypeError, match=match):
        pa.ProxyDataset(Items([item]))[0]


def test_uint8_images_need_a_converting_preprocess(model):
    items = [(torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8), i % 4) for i in range(12)]
    ds = pa.ProxyDataset(Items(items))
    assert ds[0][0].dtype == torch.uint8
    with pytest.raises(TypeError, match=r"the dataset yields torch.uint8 images; pass preprocess="):
        pa.refresh(model, ds)
    report = pa.refresh(model, ds, fraction=1.0, preprocess=lambda x: x.float() / 255)
    assert report.written == report.wrong > 0
    proxy = pa.ProxyTransform(ds.bank, mode="black", threshold=0.5)
    x = torch.stack([it[0] for it in items])
    out = proxy.replace(x, torch.arange(12))
    assert out.dtype == torch.uint8 and (out != x).any()


def test_pil_images_get_a_hint():
    from PIL import Image

    with pytest.raises(TypeError, match=r"image that is a PIL.Image.Image.*ToTensor"):
        pa.ProxyDataset(Items([(Image.new("RGB", (4, 4)), 1)]))  # item 0 is checked when the dataset is built
    ds = pa.ProxyDataset(Items([(torch.rand(3, 4, 4), 0), (Image.new("RGB", (4, 4)), 1)]))
    with pytest.raises(TypeError, match=r"dataset\[1\] returned an image that is a PIL.Image.Image.*ToTensor"):
        ds[1]


def test_bad_construction(base):
    with pytest.raises(TypeError, match="map-style dataset"):
        pa.ProxyDataset(42)
    with pytest.raises(ValueError, match="dataset is empty"):
        pa.ProxyDataset(TensorDataset(torch.empty(0, 3, 2, 2), torch.empty(0)))
    with pytest.raises(ValueError, match=r"bank must be a MaskBank of len\(dataset\)=40 samples; got a bank of 3"):
        pa.ProxyDataset(base, bank=pa.MaskBank(3))


def test_dataset_changing_length_is_detected(model):
    items = [(torch.rand(3, 8, 8), i % 4) for i in range(12)]
    ds = pa.ProxyDataset(Items(items))
    items.append((torch.rand(3, 8, 8), 0))
    with pytest.raises(RuntimeError, match=r"13 samples but its bank was made for 12"):
        pa.refresh(model, ds)


def test_observe_validation(base, device):
    ds = pa.ProxyDataset(base, device=device)
    with pytest.raises(ValueError, match=r"logits must be a tensor of shape \(B, num_classes\)"):
        ds.observe(torch.tensor([0]), torch.rand(4, device=device), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"idx has 1 entries but the batch has 2"):
        ds.observe(torch.tensor([0]), torch.rand(2, 4, device=device), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must be 2 integer class indices"):
        ds.observe(torch.tensor([0, 1]), torch.rand(2, 4, device=device), torch.tensor([0.0, 1.0]))


def test_append_mode_adds_proxies_as_extra_items(model, base):
    ds = pa.ProxyDataset(base, proxies="append")
    n = len(base)
    assert len(ds) == 2 * n and len(ds.bank) == 2 * n  # fixed: n originals and n extra slots
    assert ds.live_items().tolist() == list(range(n))  # no slot is live before a refresh
    report = pa.refresh(model, ds, fraction=1.0, seed=0)
    chosen = report.indices
    assert report.written == len(chosen) > 0
    assert len(ds) == 2 * n and ds.live_items().tolist() == list(range(n)) + (n + chosen).tolist()
    # the extra items are the chosen samples again, item n + i with idx = n + i; the originals keep idx = i
    extra = [ds[n + i] for i in chosen.tolist()]
    assert [i for _, _, i in extra] == (n + chosen).tolist()
    for (x, y, _), i in zip(extra, chosen.tolist()):
        assert x.equal(base[i][0]) and int(y) == int(base[i][1])
    assert [idx for _, _, idx in ds] == ds.live_items().tolist()  # iterating yields the live items
    # the transform turns only the extra items into proxies
    proxy = pa.ProxyTransform(ds.bank, mode="black", threshold=0.0)
    i = int(chosen[0])
    x = torch.stack([ds[i][0], ds[n + i][0]])
    out = proxy.replace(x, torch.tensor([i, n + i]))
    assert out[0].equal(x[0]) and not out[1].equal(x[1])
    # an extra item's mistake counts for its original
    ds.observe(torch.tensor([n + i]), torch.tensor([[0.0, 1.0, 0.0, 0.0]]), torch.tensor([0]))
    assert ds.observed_wrong.tolist() == [i]
    # state round trip restores the extra items
    again = pa.ProxyDataset(base, proxies="append")
    again.load_state_dict(ds.state_dict())
    assert len(again) == len(ds) and again[n + i][2] == ds[n + i][2] and torch.equal(again.live_items(), ds.live_items())
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]


def test_append_mode_refuses_an_empty_extra_slot_naming_the_sampler(model, base):
    ds = pa.ProxyDataset(base, proxies="append")
    n = len(base)
    with pytest.raises(IndexError, match=r"item 43 is the extra slot of sample 3, which holds no map.*proxyaug.ProxySampler\(ds\)"):
        ds[n + 3]
    report = pa.refresh(model, ds, fraction=1.0, seed=0)
    empty = sorted(set(range(n)) - set(report.indices.tolist()))[0]
    ds[n + int(report.indices[0])]  # a live slot is served
    with pytest.raises(IndexError, match=f"item {n + empty} is the extra slot of sample {empty}"):
        ds[n + empty]
    pa.refresh(model, ds, indices=report.indices[:0], reset=True)  # every map dropped: the slots close again
    assert ds.live_items().tolist() == list(range(n))
    with pytest.raises(IndexError, match="which holds no map"):
        ds[n + int(report.indices[0])]


def test_append_mode_validation(base):
    with pytest.raises(ValueError, match="proxies='add' is not supported"):
        pa.ProxyDataset(base, proxies="add")
    with pytest.raises(ValueError, match=r"2 \* len\(dataset\)=80 rows"):
        pa.ProxyDataset(base, pa.MaskBank(len(base)), proxies="append")


# -- checks where data enters: item 0 when the dataset is built -------------------------------------


@pytest.mark.parametrize(
    "item, exc, match",
    [
        ({"image": torch.rand(3, 4, 4)}, TypeError, r"dataset\[0\] returned a mapping with the keys \['image'\]; expected the keys 'image' and 'label' \(or a pair \(image, label\)\). Rename the columns \(hf_dataset.rename_column\(old, 'label'\)\)"),
        ((torch.rand(3, 4, 4), 0, "extra"), TypeError, r"dataset\[0\] returned a tuple of 3 items"),
        ((torch.rand(3, 4, 4), torch.tensor([0.0, 1.0])), TypeError, r"dataset\[0\] returned a label that is a tensor of shape \(2,\)"),
        ((torch.rand(3, 4, 4) * 255, 0), ValueError, r"the values of dataset\[0\] lie in \[.*\]; expected float images in \[0, 1\]\. They look like 0\.\.255"),
        ((torch.rand(3, 4, 4) * 4 - 2, 0), ValueError, r"the values of dataset\[0\] lie in \[.*\]; expected float images in \[0, 1\]\. They look normalised"),
    ],
)
def test_item_zero_is_checked_when_the_dataset_is_built(item, exc, match):
    with pytest.raises(exc, match=match):
        pa.ProxyDataset(Items([item, item]))


def test_a_small_interpolation_overshoot_is_accepted():
    x = torch.rand(3, 4, 4) * 1.1 - 0.05  # what bicubic resizing of a float image can give
    assert len(pa.ProxyDataset(Items([(x, 0)]))) == 1


# -- observe ------------------------------------------------------------------------------------------


def test_observe_keeps_a_mistake_when_an_original_and_its_copy_share_a_batch(base, device):
    ds = pa.ProxyDataset(base, proxies="append")
    n = len(base)
    # row 3 (the original, wrong) and row n + 3 (its appended copy, right) in one batch; logits on the device
    logits = torch.tensor([[0.0, 9.0, 0.0, 0.0], [9.0, 0.0, 0.0, 0.0]], device=device)
    labels = torch.tensor([0, 0])
    ds.observe(torch.tensor([3, n + 3]), logits, labels)
    ds.observe(torch.tensor([n + 5, 5]), logits, labels)  # the copy wrong, the original right
    assert ds.observed_wrong.tolist() == [3, 5]


def test_observe_copies_indices_and_labels_without_blocking(base, copies):
    ds = pa.ProxyDataset(base)
    # logits on another device ("meta" stands in for "cuda") than the CPU batch indices and labels
    ds.observe(torch.tensor([1, 2]), torch.zeros(2, 4, device="meta"), torch.tensor([0, 1]))
    assert copies and all(copies), "a host-to-device copy in observe() was blocking"


# -- pickling and copying ------------------------------------------------------------------------------


def test_pickling_for_a_spawn_worker_leaves_the_bank_unshared(base):
    import io
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  (registers torch's reductions)

    ds = pa.ProxyDataset(base)
    ds.bank.put(torch.tensor([1]), torch.rand(1, 3, 3))
    ds.observe(torch.tensor([0]), torch.tensor([[0.0, 1.0, 0.0, 0.0]]), torch.tensor([0]))
    ForkingPickler(io.BytesIO()).dump(ds)
    assert not ds.bank.maps.is_shared() and not ds.bank.present.is_shared() and not ds.mistakes.flags.is_shared()
    ds.bank.put(torch.tensor([2]), torch.rand(1, 5, 5), clear_others=True)  # so it can still change resolution
    assert ds.bank.resolution == (5, 5)


def test_deepcopy_keeps_bank_and_observations(base):
    import copy

    ds = pa.ProxyDataset(base)
    ds.bank.put(torch.tensor([1]), torch.rand(1, 3, 3))
    ds.observe(torch.tensor([0]), torch.tensor([[0.0, 1.0, 0.0, 0.0]]), torch.tensor([0]))
    again = copy.deepcopy(ds)
    assert torch.equal(again.bank.maps, ds.bank.maps) and again.bank is not ds.bank
    assert again.observed_wrong.tolist() == [0]


def test_rows_name_where_a_sample_map_lives(base):
    assert pa.ProxyDataset(base).rows([0, 39]).tolist() == [0, 39]
    assert pa.ProxyDataset(base, proxies="append").rows(torch.tensor([0, 39])).tolist() == [40, 79]
    with pytest.raises(IndexError, match=r"samples contains 40, out of range"):
        pa.ProxyDataset(base).rows([40])


# -- the CPU path's map resolution -----------------------------------------------------------------------


def test_cpu_path_measures_the_resolution_from_the_model(model, base):
    ds = pa.ProxyDataset(base).enable_cpu_path(model=model, mode="black")
    assert ds.bank.resolution == (8, 8) and ds.bank.maps.is_shared()
    report = pa.refresh(model, ds, fraction=1.0)
    assert report.written and report.resolution == (8, 8)


def test_cpu_path_refuses_a_resolution_the_model_does_not_give(model, base):
    ds = pa.ProxyDataset(base, resolution=(7, 7))
    with pytest.raises(ValueError, match=r"the bank stores maps at \(7, 7\) but the model's target layer gives \(8, 8\) on item 0; build the dataset with resolution=\(8, 8\)"):
        ds.enable_cpu_path(model=model)
    with pytest.raises(ValueError, match=r"needs a fixed map resolution.*pass model="):
        pa.ProxyDataset(base).enable_cpu_path()


def test_map_resolution_helper(model, base):
    from proxyaug.attention import map_resolution

    assert map_resolution(model, base[0][0]) == (8, 8)
    assert map_resolution(model, base.tensors[0][:3], pa.MapSpec(layer="features.0")) == (16, 16)


def test_the_cpu_path_transform_runs_on_each_item_and_a_second_call_replaces_it(base):
    ds = pa.ProxyDataset(base, resolution=(8, 8))
    ds.enable_cpu_path(transform=lambda x: x * 0)
    assert ds[0][0].eq(0).all()
    ds.enable_cpu_path(transform=lambda x: x + 1)  # e.g. a new CPU augmentation for the next round
    assert ds[0][0].equal(base[0][0] + 1)


def test_ds_transform_is_the_wrapped_datasets_as_torchvision_users_expect(base):
    class WithTransform(torch.utils.data.Dataset):
        transform = staticmethod(lambda x: x)

        def __len__(self):
            return len(base)

        def __getitem__(self, i):
            return base[i]

    inner = WithTransform()
    ds = pa.ProxyDataset(inner, resolution=(8, 8)).enable_cpu_path(transform=lambda x: x * 0)
    assert ds.transform is inner.transform  # forwarded, not shadowed by the CPU path's transform
    with pytest.raises(AttributeError):
        pa.ProxyDataset(base).transform  # TensorDataset has none

def test_append_mode_serves_the_maps_of_a_bank_given_with_maps_in_it(base):
    n = len(base)
    bank = pa.MaskBank(2 * n, resolution=(2, 2))
    bank.put(torch.tensor([n + 1]), torch.ones(1, 2, 2))  # sample 1's map, in its extra slot's row
    ds = pa.ProxyDataset(base, bank, proxies="append")
    assert ds.live_items().tolist() == [*range(n), n + 1]
    x, y, row = ds[n + 1]
    assert row == n + 1 and torch.equal(x, base[1][0])
