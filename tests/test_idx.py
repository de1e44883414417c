"""The Fashion-MNIST / MNIST loaders of the study harness (issue 15), on tiny IDX files the tests
write themselves: gzipped or not, flat or in torchvision's layout, broken or missing."""

import gzip
import os
import struct

import pytest
import torch

from benchmarks import idx as idx_module
from benchmarks.data import load_data
from benchmarks.idx import IDX_FILES, find_idx, read_idx


def _idx_bytes(values: torch.Tensor, code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, values.ndim) + struct.pack(f">{values.ndim}i", *values.shape)
    return header + values.numpy().astype(">u1" if code == 0x08 else ">i4").tobytes()


def _write(directory, *, gz: bool, n_train: int = 40, n_test: int = 20, side: int = 28, seed: int = 0):
    """The four files of a tiny dataset in ``directory``; returns (train images, train labels, test images, test labels)."""
    g = torch.Generator().manual_seed(seed)
    arrays = {
        "train_images": torch.randint(0, 256, (n_train, side, side), generator=g, dtype=torch.uint8),
        "train_labels": (torch.arange(n_train) % 10).to(torch.uint8),
        "test_images": torch.randint(0, 256, (n_test, side, side), generator=g, dtype=torch.uint8),
        "test_labels": (torch.arange(n_test) % 10).to(torch.uint8),
    }
    os.makedirs(directory, exist_ok=True)
    for key, values in arrays.items():
        data = _idx_bytes(values)
        path = os.path.join(directory, IDX_FILES[key] + (".gz" if gz else ""))
        with open(path, "wb") as f:
            f.write(gzip.compress(data) if gz else data)
    return arrays


@pytest.fixture
def no_default(monkeypatch, tmp_path):
    """Fashion-MNIST's default directory pointed somewhere empty (the Debian package may be installed here)."""
    title, folder, _, how = idx_module.SOURCES["fashion-mnist"]
    empty = str(tmp_path / "usr-share-datasets-fashion-mnist")
    monkeypatch.setitem(idx_module.SOURCES, "fashion-mnist", (title, folder, (empty,), how))
    return empty


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_gzipped_or_not(tmp_path, gz):
    arrays = _write(tmp_path, gz=gz)
    for key, values in arrays.items():
        got = read_idx(str(tmp_path / (IDX_FILES[key] + (".gz" if gz else ""))))
        assert got.dtype == torch.uint8 and torch.equal(got, values), key


def test_read_idx_big_endian_wider_types(tmp_path):
    values = torch.tensor([[1, -2, 70000], [3, 4, -5]], dtype=torch.int32)
    path = tmp_path / "x-idx2-int"
    path.write_bytes(_idx_bytes(values, code=0x0C))
    assert torch.equal(read_idx(str(path)), values)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"\x89PNG\r\n\x1a\n....", r"is not an IDX file: its magic number is 89504e47; expected 0000 followed by a type code"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", r"is not an IDX file: its magic number is 00000701"),
        (b"", r"is not an IDX file: its magic number is missing"),
        (b"\x00\x00\x08\x03\x00\x00", r"is cut short: its header names 3 dimensions but the file has 6 bytes"),
        (struct.pack(">BBBBi", 0, 0, 8, 1, 5) + b"\x01\x02", r"has 10 bytes; its header \(shape \(5,\), uint8\) says 13"),
        (b"\x1f\x8bnot really gzip", r"starts as a gzip file but does not decompress"),
    ],
)
def test_read_idx_refuses_what_is_not_idx(tmp_path, content, match):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_idx(str(path))


def test_a_wrong_magic_number_in_a_dataset_is_named_by_load_data(tmp_path, no_default):
    _write(tmp_path, gz=False)
    (tmp_path / IDX_FILES["test_labels"]).write_bytes(b"\x00\x00\x08\x09\x00\x00\x00\x00")
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte' is not an IDX file: its magic number is 00000809"):
        load_data("fashion-mnist", size=28, root=str(tmp_path))


@pytest.mark.parametrize("name, folder", [("fashion-mnist", "FashionMNIST"), ("mnist", "MNIST")])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("gz", [False, True])
def test_load_data_reads_both_layouts(tmp_path, no_default, name, folder, layout, gz):
    directory = tmp_path if layout == "flat" else tmp_path / folder / "raw"
    arrays = _write(directory, gz=gz)
    data = load_data(name, size=28, root=str(tmp_path))
    assert find_idx(name, str(tmp_path))["train_images"].startswith(str(directory))
    assert (data.name, len(data.pool), len(data.test), data.num_classes, data.channels) == (name, 40, 20, 10, 1)
    x, y = data.pool[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 3
    assert torch.equal(x[0], arrays["train_images"][3].float() / 255)  # no resize at 28: the pixels as stored
    assert torch.equal(data.test.tensors[0][:, 0], arrays["test_images"].float() / 255)
    assert torch.equal(data.pool_labels, arrays["train_labels"].long()) and data.pool_labels.dtype == torch.int64
    assert "40 pool / 20 test images (official train / test), 28x28 grey" in data.info and str(directory) in data.info


def test_resized_canonical_frame_and_the_normalisation(tmp_path, no_default):
    _write(tmp_path, gz=True)
    data = load_data("fashion-mnist", size=32, root=str(tmp_path))
    x = data.pool.tensors[0]
    assert x.shape == (40, 1, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert "resized to 32x32" in data.info and data.mean == (0.2860,) and data.std == (0.3530,)
    assert load_data("mnist", size=28, root=str(tmp_path)).mean == (0.1307,)  # the flat directory serves both names


def test_root_comes_before_the_default_directory(tmp_path, monkeypatch):
    default, mine = tmp_path / "default", tmp_path / "mine"
    _write(default, gz=True, seed=1)
    theirs = _write(mine, gz=False, seed=2)
    title, folder, _, how = idx_module.SOURCES["fashion-mnist"]
    monkeypatch.setitem(idx_module.SOURCES, "fashion-mnist", (title, folder, (str(default),), how))
    assert torch.equal(load_data("fashion-mnist", size=28, root=str(mine)).pool.tensors[0][0, 0], theirs["train_images"][0].float() / 255)
    assert find_idx("fashion-mnist", str(tmp_path / "elsewhere"))["train_images"].startswith(str(default))  # found by default


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, no_default):
    with pytest.raises(FileNotFoundError) as info:
        load_data("fashion-mnist", root=str(tmp_path))
    message = str(info.value)
    assert "Fashion-MNIST was not found: looked for train-images-idx3-ubyte" in message
    assert f"{tmp_path}, {tmp_path}/FashionMNIST/raw, {no_default}" in message
    assert "apt-get install dataset-fashion-mnist" in message and "torchvision.datasets.FashionMNIST(root, download=True)" in message


def test_an_incomplete_directory_is_named_with_what_it_lacks(tmp_path):
    _write(tmp_path, gz=True)
    os.remove(tmp_path / (IDX_FILES["test_images"] + ".gz"))
    with pytest.raises(FileNotFoundError, match=r"MNIST was not found.* holds some of them but not t10k-images-idx3-ubyte\. To get it, download it once"):
        load_data("mnist", root=str(tmp_path))


def test_mismatched_images_and_labels(tmp_path, no_default):
    _write(tmp_path, gz=False)
    (tmp_path / IDX_FILES["train_labels"]).write_bytes(_idx_bytes(torch.zeros(39, dtype=torch.uint8)))
    with pytest.raises(ValueError, match=r"do not match: images of shape \(40, 28, 28\) and labels of shape \(39,\)"):
        load_data("fashion-mnist", root=str(tmp_path))


def test_pool_size_is_a_stratified_seeded_subset_stated_in_info(tmp_path, no_default):
    _write(tmp_path, gz=True, n_train=200)
    full = load_data("fashion-mnist", size=28, root=str(tmp_path))
    a = load_data("fashion-mnist", size=28, root=str(tmp_path), pool_size=50, split_seed=3)
    b = load_data("fashion-mnist", size=28, root=str(tmp_path), pool_size=50, split_seed=3)
    c = load_data("fashion-mnist", size=28, root=str(tmp_path), pool_size=50, split_seed=4)
    assert len(a.pool) == 50 and a.pool_labels.bincount().tolist() == [5] * 10  # stratified
    assert torch.equal(a.pool.tensors[0], b.pool.tensors[0]) and not torch.equal(a.pool.tensors[0], c.pool.tensors[0])
    rows = [int((full.pool.tensors[0] == x).flatten(1).all(1).nonzero()) for x in a.pool.tensors[0]]
    assert torch.equal(full.pool_labels[rows], a.pool_labels)  # images keep their labels
    assert len(a.test) == len(full.test) == 20  # the test set is never cut
    assert a.info.endswith("; pool: a stratified subset of 50 of the 200 images (seed 3)") and full.info == load_data(
        "fashion-mnist", size=28, root=str(tmp_path), pool_size=None).info
    for bad in (0, 5, 201, 2.5, True):
        with pytest.raises(ValueError, match=rf"pool_size={bad!r} is not valid; expected None \(the whole pool\) or an int from 10 to 200"):
            load_data("fashion-mnist", size=28, root=str(tmp_path), pool_size=bad)


def test_the_study_trains_on_fashion_mnist(tmp_path, no_default):
    from benchmarks.study.config import Study
    from benchmarks.study.runner import run_study

    _write(tmp_path / "data", gz=True, n_train=60)
    study = Study(datasets=["fashion-mnist"], seeds=[0], schedule="1,p,1", size=28, batch_size=16, root=str(tmp_path / "data"),
                  arms=[{"name": "proxy", "kind": "proxy", "select": "loss", "budget": 0.2}], out=str(tmp_path / "out"), grids=0)
    (record,) = run_study(study, log=lambda s: None)
    assert record["dataset"] == "fashion-mnist" and record["test_size"] == 20 and record["train_size"] == 48
    assert record["rounds"][0]["chosen"] == 10 and record["rounds"][0]["budget"] == 10  # 20 % of the 48 scanned, rounded
