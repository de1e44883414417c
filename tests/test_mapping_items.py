"""Mapping items (a Hugging Face ``datasets`` row): ProxyDataset yields a dict with ``"idx"`` added,
and the whole loop (DataLoader, ProxyTransform, refresh, MapCapture, append mode) runs on it as on pairs."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import proxyaug as pa

from .conftest import Items

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _rows(n: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(3, 8, 8, generator=g), "label": i % 2, "id": f"s{i}"} for i in range(n)]


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _wrong_everywhere() -> nn.Module:
    """A model that predicts class 2 for every image (labels are 0 and 1: all wrong), with maps that are not flat."""
    net = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        net[0].weight.normal_(generator=torch.Generator().manual_seed(1))
        net[0].bias.copy_(torch.tensor([0.0, 0.0, 50.0]))
    return net


@pytest.mark.parametrize("proxies", ["replace", "append"])
def test_items_are_the_rows_keys_with_idx_added(proxies):
    rows = _rows()
    ds = pa.ProxyDataset(Items(rows), proxies=proxies)
    item = ds[5]
    assert type(item) is dict and list(item) == ["image", "label", "id", "idx"]
    assert item["image"] is rows[5]["image"] and item["label"] == 1 and item["id"] == "s5" and item["idx"] == 5
    assert "idx" not in rows[5]  # the base dataset's row is left as it was
    x, y = ds.canonical(5)
    assert x is rows[5]["image"] and y == 1


def test_append_mode_yields_the_extra_slot_with_its_bank_row():
    ds = pa.ProxyDataset(Items(_rows()), proxies="append")
    pa.refresh(_wrong_everywhere(), ds, indices=[1], fraction=1.0, spec=pa.MapSpec(layer="0"))
    extra = ds[8 + 1]
    assert extra["idx"] == 9 and extra["id"] == "s1" and bool(extra["image"].equal(ds[1]["image"]))
    assert ds.live_items().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 9]


def test_a_loader_batch_of_rows_goes_through_proxy_transform_as_a_dict():
    rows = _rows()
    ds = pa.ProxyDataset(Items(rows))
    report = pa.refresh(_wrong_everywhere(), ds, fraction=1.0, spec=pa.MapSpec(layer="0"))
    assert report.written == len(rows) and bool(ds.bank.present.all())
    proxy = pa.ProxyTransform(ds.bank, mode="black", threshold=0.5)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert sorted(batch) == ["id", "idx", "image", "label"] and batch["id"] == ["s0", "s1", "s2", "s3"]
    out = proxy(batch)
    assert sorted(out) == sorted(batch) and out["label"].equal(batch["label"])
    expected = proxy.replace(batch["image"], batch["idx"])
    assert out["image"].equal(expected) and not out["image"].equal(batch["image"])


def test_capture_in_the_step_takes_the_dict_batch_fields():
    ds = pa.ProxyDataset(Items(_rows()))
    model = _cnn()
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="0"), fraction=1.0)
    for batch in DataLoader(ds, batch_size=4):
        with capture.step(model):
            logits = model(batch["image"])
            capture.observe(batch["idx"], logits, batch["label"])
            nn.functional.cross_entropy(logits, batch["label"]).backward()
    report = capture.commit()
    assert report.scanned == 8 and report.written == report.wrong == int(ds.bank.present.sum())


def _hf_raw(n: int = 12, shape=(8, 8, 3)):
    """An in-memory Hugging Face dataset of PIL images and class labels, as load_dataset gives them."""
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    return datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(n)]}, features=features)


def _hf_dataset(n: int = 12):
    from torchvision.transforms import v2

    hf = _hf_raw(n)
    to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])

    def transform(batch):  # with_transform hands over a batch of rows, one row for hf[i]
        batch["image"] = [to_tensor(image) for image in batch["image"]]
        return batch

    return hf, hf.with_transform(transform)


def test_a_hugging_face_dataset_runs_the_readme_loop_with_a_worker():
    raw, hf = _hf_dataset()
    ds = pa.ProxyDataset(hf)
    assert ds.features["label"].names == ["a", "b", "c"]  # forwarded to the Hugging Face dataset
    pa.refresh(_wrong_everywhere(), ds, fraction=1.0, spec=pa.MapSpec(layer="0"))
    assert bool(ds.bank.present.all())
    proxy = pa.ProxyTransform(ds.bank, mode="blend", threshold=0.5, weight=0.1)
    seen = []
    for batch in DataLoader(ds, batch_size=5, num_workers=1):  # the dataset pickles into a worker
        x = proxy.replace(batch["image"], batch["idx"])
        assert x.shape[1:] == (3, 8, 8) and x.dtype == torch.float32 and not x.equal(batch["image"])
        seen += batch["idx"].tolist()
        assert batch["label"].tolist() == [i % 2 for i in batch["idx"].tolist()]
    assert seen == list(range(12))
    x, y = ds.canonical(4)
    assert y == 0 and torch.allclose(x, torch.from_numpy(np.array(raw[4]["image"])).permute(2, 0, 1) / 255)


def test_a_hugging_face_dataset_without_a_transform_says_to_add_one():
    raw, _ = _hf_dataset()
    with pytest.raises(TypeError, match=r"dataset\[0\] returned an image that is a PIL\..*with_transform"):
        pa.ProxyDataset(raw)


def test_a_hugging_face_dataset_with_other_column_names_names_the_rename():
    raw, _ = _hf_dataset()
    with pytest.raises(TypeError, match=r"keys \['img', 'label'\].*hf_dataset.rename_column\('img', 'image'\)"):
        pa.ProxyDataset(raw.rename_column("image", "img"))


def test_the_how_to_loop_runs_as_printed():
    """docs/howto/huggingface.md's loop, on an in-memory stand-in for load_dataset('fashion_mnist')."""
    page = (ROOT / "docs" / "howto" / "huggingface.md").read_text()
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", page, flags=re.S) if "for epoch" in c]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    names = {"hf": _hf_raw(48, shape=(28, 28)), "model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1)}
    exec(compile(code, "huggingface.md", "exec"), names)
    ds = names["ds"]
    assert ds.refreshes == 1 and ds.last_report.scanned == 48 and ds.last_report.written == int(ds.bank.present.sum())
