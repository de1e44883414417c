import pickle

import pytest
import torch

from proxyaug import MaskBank, ProxyTransform


def test_put_get_present_clear(device):
    bank = MaskBank(10, resolution=(7, 7), device=device)
    maps = torch.rand(3, 7, 7, device=device)
    bank.put(torch.tensor([0, 4, 9]), maps)
    got, present = bank.get(torch.tensor([4, 1, 9]))
    assert got.device == present.device == bank.device and bank.device.type == device.type
    assert present.tolist() == [True, False, True]
    torch.testing.assert_close(got[0], maps[1], atol=1e-3, rtol=0)  # float16 storage
    assert torch.equal(got[1], torch.zeros(7, 7, device=device))
    assert got.dtype == torch.float32
    assert bank.present.nonzero().flatten().tolist() == [0, 4, 9]
    bank.clear()
    assert not bank.present.any() and bank.resolution == (7, 7)


def test_memory_is_about_100_bytes_per_image_at_7x7():
    bank = MaskBank(1000, resolution=(7, 7))
    total = sum(b.numel() * b.element_size() for b in bank.buffers())
    assert bank.nbytes_per_sample == 99 and total == 99_000


def test_state_dict_round_trip_and_size_mismatch(device):
    bank = MaskBank(6, resolution=(4, 4), device=device)
    bank.put(torch.tensor([1, 3]), torch.rand(2, 4, 4))
    other = MaskBank(6, resolution=None, device=device)
    other.load_state_dict(bank.state_dict())
    assert torch.equal(other.maps, bank.maps) and torch.equal(other.present, bank.present)
    assert other.resolution == (4, 4)
    restored = pickle.loads(pickle.dumps(bank.state_dict()))
    assert torch.equal(restored["maps"], bank.maps)
    with pytest.raises(ValueError, match=r"bank of 6 samples but this bank has 5"):
        MaskBank(5).load_state_dict(bank.state_dict())
    with pytest.raises(KeyError, match="lacks"):
        MaskBank(6).load_state_dict({"maps": bank.maps})


def test_to_moves_buffers_and_state_dict_keys(device):
    bank = MaskBank(4, resolution=(2, 2)).to(torch.float32)
    assert bank.maps.dtype == torch.float32 and bank.present.dtype == torch.bool
    assert set(bank.state_dict()) == {"maps", "present"}
    assert bank.device == torch.device("cpu")
    bank.to(device)
    assert bank.maps.device.type == bank.present.device.type == device.type and bank.maps.dtype == torch.float32


def test_lazy_resolution_and_resolution_change():
    bank = MaskBank(5, resolution=None)
    assert bank.resolution is None and bank.nbytes_per_sample == 1
    bank.put(torch.tensor([0]), torch.rand(1, 3, 3))
    assert bank.resolution == (3, 3)
    with pytest.raises(ValueError, match=r"resolution \(5, 5\) but the bank stores \(3, 3\)"):
        bank.put(torch.tensor([1]), torch.rand(1, 5, 5))
    bank.put(torch.tensor([1]), torch.rand(1, 5, 5), clear_others=True)
    assert bank.resolution == (5, 5) and bank.present.tolist() == [False, True, False, False, False]


@pytest.mark.parametrize(
    "idx, maps, exc, match",
    [
        (torch.tensor([0, 7]), torch.rand(2, 2, 2), IndexError, r"idx contains 7, out of range for a bank of 5 samples"),
        (torch.tensor([-1]), torch.rand(1, 2, 2), IndexError, r"idx contains -1"),
        (torch.tensor([0.0]), torch.rand(1, 2, 2), TypeError, r"idx must hold integer sample indices; got dtype torch.float32"),
        (torch.tensor([0, 1]), torch.rand(3, 2, 2), ValueError, r"idx has 2 entries but the batch has 3"),
        (torch.tensor([1, 1]), torch.rand(2, 2, 2), ValueError, r"repeated indices"),
        (torch.tensor([1]), torch.full((1, 2, 2), float("nan")), ValueError, r"NaN or inf"),
        (torch.tensor([1]), torch.full((1, 2, 2), 2.0), ValueError, r"expected \[0, 1\]"),
        (torch.tensor([1]), torch.rand(2, 2), ValueError, r"shape \(K, h, w\)"),
    ],
)
def test_bad_put_is_refused_and_leaves_bank_unchanged(idx, maps, exc, match, device):
    bank = MaskBank(5, resolution=(2, 2), device=device)
    bank.put(torch.tensor([2]), torch.rand(1, 2, 2))
    before = {k: v.clone() for k, v in bank.state_dict().items()}
    with pytest.raises(exc, match=match):
        bank.put(idx.to(device), maps.to(device))
    assert all(torch.equal(before[k], v) for k, v in bank.state_dict().items())


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_size(bad):
    with pytest.raises(ValueError, match=r"num_samples=.* expected a positive integer"):
        MaskBank(bad)


def test_maps_from_the_host_go_to_the_banks_device(device):
    bank = MaskBank(4, resolution=(2, 2), device=device)
    bank.put(torch.tensor([1]), torch.rand(1, 2, 2))  # CPU maps into a bank on the device
    maps, present = bank.get(torch.tensor([1, 2], device=device))  # idx on the device too
    assert maps.device.type == device.type and present.tolist() == [True, False]


# -- load_state_dict: directly and as a submodule -------------------------------------------------
def _saved(resolution=(4, 4), n=6):
    bank = MaskBank(n, resolution=resolution)
    bank.put(torch.tensor([1, 3]), torch.rand(2, *resolution))
    return bank


def test_load_as_a_submodule_adopts_the_saved_resolution():
    saved = ProxyTransform(_saved((4, 4)))
    target = ProxyTransform(MaskBank(6, resolution=(2, 2)))
    result = target.load_state_dict(saved.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert target.bank.resolution == (4, 4) and target.bank.maps.dtype == torch.float16
    assert torch.equal(target.bank.maps, saved.bank.maps) and torch.equal(target.bank.present, saved.bank.present)
    with pytest.raises(ValueError, match=r"state_dict is of a bank of 6 samples but this bank has 5"):
        ProxyTransform(MaskBank(5)).load_state_dict(saved.state_dict())


def test_load_of_the_same_shape_copies_in_place():
    saved, bank = _saved(), MaskBank(6, resolution=(4, 4))
    ptr = bank.maps.data_ptr()
    bank.load_state_dict(saved.state_dict())
    assert bank.maps.data_ptr() == ptr and torch.equal(bank.maps, saved.maps)


def test_unexpected_and_missing_keys_are_reported_as_nn_module_does():
    state = _saved().state_dict()
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "extra"'):
        MaskBank(6).load_state_dict({**state, "extra": torch.zeros(1)})
    bank = MaskBank(6)
    result = bank.load_state_dict({**state, "extra": torch.zeros(1)}, strict=False)
    assert result.unexpected_keys == ["extra"] and result.missing_keys == []
    assert torch.equal(bank.maps, state["maps"])
    bank = MaskBank(6, resolution=(4, 4))
    result = bank.load_state_dict({"present": state["present"]}, strict=False)
    assert result.missing_keys == ["maps"] and torch.equal(bank.present, state["present"])
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "bank.maps"'):
        ProxyTransform(MaskBank(6)).load_state_dict({"bank.present": state["present"]})


def test_load_with_assign_adopts_the_saved_tensors():
    state = _saved().state_dict()
    bank = MaskBank(6, resolution=(2, 2))
    bank.load_state_dict(state, assign=True)
    assert bank.maps is state["maps"] and bank.present is state["present"]


def test_load_of_another_resolution_into_shared_memory_is_refused():
    bank = MaskBank(6, resolution=(2, 2)).share_memory()
    bank.put(torch.tensor([0]), torch.rand(1, 2, 2))
    before = {k: v.clone() for k, v in bank.state_dict().items()}
    with pytest.raises(ValueError, match=r"resolution \(4, 4\) but this bank stores \(2, 2\) in shared memory"):
        bank.load_state_dict(_saved((4, 4)).state_dict())
    with pytest.raises(ValueError, match=r"resolution \(4, 4\) but this bank stores \(2, 2\) in shared memory"):
        ProxyTransform(bank).load_state_dict(ProxyTransform(_saved((4, 4))).state_dict())
    with pytest.raises(ValueError, match=r"assign=True .* shared memory"):
        bank.load_state_dict(_saved((2, 2)).state_dict(), assign=True)
    assert all(torch.equal(before[k], v) for k, v in bank.state_dict().items())
    saved = _saved((2, 2))
    bank.load_state_dict(saved.state_dict())  # the same shape: in place, still shared
    assert bank.maps.is_shared() and torch.equal(bank.maps, saved.maps)


def test_malformed_state_is_refused_before_anything_changes():
    bank = _saved((2, 2))
    before = {k: v.clone() for k, v in bank.state_dict().items()}
    with pytest.raises(ValueError, match=r"state_dict holds maps \(6, 4\) and present \(6,\); expected \(N, h, w\) and \(N,\)"):
        bank.load_state_dict({"maps": torch.zeros(6, 4), "present": torch.zeros(6, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"assign=True keeps the saved tensors as they are; expected floating maps and bool present"):
        bank.load_state_dict({"maps": torch.zeros(6, 2, 2), "present": torch.zeros(6, dtype=torch.uint8)}, assign=True)
    assert all(torch.equal(before[k], v) for k, v in bank.state_dict().items())


# -- a parent's cast leaves the bank's dtype and storage alone; moves still apply -----------------
@pytest.mark.parametrize(
    "cast, dtype",
    [
        (lambda m: m.double(), torch.float16),
        (lambda m: m.half(), torch.float32),
        (lambda m: m.float(), torch.float16),
        (lambda m: m.bfloat16(), torch.float16),
        (lambda m: m.to(torch.float64), torch.float16),
        (lambda m: m.to(dtype=torch.float16), torch.float32),
        (lambda m: m.type(torch.float64), torch.float16),
    ],
    ids=["double", "half", "float", "bfloat16", "to-float64", "to-dtype-kw", "type"],
)
def test_a_parents_cast_leaves_the_bank_as_it_is(cast, dtype):
    bank = MaskBank(6, resolution=(4, 4), dtype=dtype)
    bank.put(torch.tensor([1, 3]), torch.rand(2, 4, 4))
    maps, present = bank.maps, bank.present
    parent = torch.nn.Sequential(ProxyTransform(bank), torch.nn.Linear(2, 2))
    cast(parent)
    assert bank.maps is maps and bank.present is present  # not even a copy of the same dtype
    assert bank.maps.dtype == dtype and bank.present.dtype == torch.bool


def test_a_parents_cast_keeps_a_shared_memory_bank_shared():
    bank = _saved((4, 4)).share_memory()
    ptr = bank.maps.data_ptr()
    torch.nn.Sequential(ProxyTransform(bank), torch.nn.Linear(2, 2)).double().half()
    assert bank.maps.is_shared() and bank.present.is_shared() and bank.maps.data_ptr() == ptr
    assert bank.maps.dtype == torch.float16


def test_a_parents_move_moves_the_bank_and_keeps_its_dtype():
    bank = _saved((4, 4))
    proxy = ProxyTransform(bank)
    proxy.to("meta")
    assert bank.device.type == "meta" and bank.present.device.type == "meta" and bank.maps.dtype == torch.float16
    bank = _saved((4, 4))
    torch.nn.Sequential(ProxyTransform(bank)).to("meta", torch.float64)  # a move and a cast: only the move
    assert bank.device.type == "meta" and bank.maps.dtype == torch.float16 and bank.present.dtype == torch.bool


def test_a_cast_called_on_the_bank_itself_converts_it():
    bank = _saved((4, 4))
    before = bank.maps.float()
    bank.double()
    assert bank.maps.dtype == torch.float64 and bank.present.dtype == torch.bool
    assert torch.equal(bank.maps.float(), before)
    bank.half()
    assert bank.maps.dtype == torch.float16
    inner = _saved((4, 4))
    torch.nn.Sequential(inner).double()
    assert inner.maps.dtype == torch.float16  # and the parent's cast after it still does not


# -- a bank in shared memory (the CPU path) never leaves it: its DataLoader workers hold that storage ---
SHARED_CASTS = {
    "float": (lambda b: b.float(), r"bank.float\(\) would cast the maps to torch.float32"),
    "double": (lambda b: b.double(), r"bank.double\(\) would cast the maps to torch.float64"),
    "half": (lambda b: b.half(), r"bank.half\(\) would cast the maps to torch.float16"),
    "bfloat16": (lambda b: b.bfloat16(), r"bank.bfloat16\(\) would cast the maps to torch.bfloat16"),
    "to-dtype": (lambda b: b.to(torch.float64), r"bank.to\(torch.float64\) would cast the maps to torch.float64"),
    "to-dtype-kw": (lambda b: b.to(dtype=torch.float64), r"bank.to\(dtype=torch.float64\) would cast"),
    "to-device-and-dtype": (lambda b: b.to("cpu", torch.float64), r"bank.to\('cpu', torch.float64\) would cast"),
    "type": (lambda b: b.type(torch.float64), r"bank.type\(torch.float64\) would cast the maps to torch.float64"),
}


@pytest.mark.parametrize("stored", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("spelling", sorted(SHARED_CASTS))
def test_a_cast_of_a_shared_bank_is_refused_naming_the_dtype_to_build_with(spelling, stored):
    cast, match = SHARED_CASTS[spelling]
    bank = MaskBank(6, resolution=(4, 4), dtype=stored)
    bank.put(torch.tensor([1, 3]), torch.rand(2, 4, 4))
    bank.share_memory()
    maps, ptr = bank.maps, bank.maps.data_ptr()
    target = cast(MaskBank(1, resolution=(1, 1), dtype=stored)).maps.dtype  # what the cast gives an unshared bank
    if target == stored:  # a cast to the dtype it already stores changes nothing and is fine
        cast(bank)
    else:
        with pytest.raises(ValueError, match=match + r".*in shared memory, which DataLoader workers hold.*Build the dataset with dtype=" + str(target)):
            cast(bank)
    assert bank.maps is maps and bank.maps.data_ptr() == ptr and bank.maps.is_shared() and bank.maps.dtype == stored


def test_a_shared_bank_stays_on_the_cpu_and_a_dataset_says_which_dtype_to_build_with():
    from torch.utils.data import TensorDataset

    import proxyaug as pa

    bank = _saved((4, 4)).share_memory()
    bank.to("cpu")  # a move to where it is: fine
    bank.to(torch.device("cpu"), torch.float16)
    with pytest.raises(ValueError, match=r"bank.to\('meta'\) would move the maps to meta, but this bank lives in shared memory on the CPU"):
        bank.to("meta")
    with pytest.raises(ValueError, match=r"moving the module that holds it would move the maps to meta"):
        ProxyTransform(bank).to("meta")
    assert bank.maps.is_shared() and bank.device.type == "cpu"
    unshared = _saved((4, 4))
    ProxyTransform(unshared).to("meta")  # an unshared bank moves as before
    assert unshared.device.type == "meta"
    ds = pa.ProxyDataset(TensorDataset(torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)), resolution=(2, 2)).enable_cpu_path()
    with pytest.raises(ValueError, match=r"bank.float\(\) would cast the maps to torch.float32.*Build the dataset with dtype=torch.float32"):
        ds.bank.float()


def test_lookup_is_get_without_the_checks(device):
    bank = _saved((4, 4)).to(device)
    idx = torch.tensor([3, 0, 1])
    maps, present = bank.lookup(idx)
    expect = bank.get(idx)
    assert torch.equal(maps, expect[0]) and torch.equal(present, expect[1]) and maps.device.type == device.type


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_lookup_under_autocast_gives_the_float32_maps(device, dtype):
    bank = _saved((4, 4)).to(device)
    idx = torch.tensor([3, 0, 1])
    expect = bank.lookup(idx)
    with torch.autocast(device.type, dtype=dtype):
        maps, present = bank.lookup(idx)
    assert maps.dtype == torch.float32 and torch.equal(maps, expect[0]) and torch.equal(present, expect[1])


def test_lookup_does_not_synchronise(device, no_host_sync):
    bank = _saved((4, 4)).to(device)
    idx, on_device = torch.tensor([3, 0, 1]), torch.tensor([1, 2], device=device)  # CPU (pageable, as a loader yields it), device
    bank.lookup(idx)  # warm-up: first-use allocations
    with no_host_sync():
        maps, present = bank.lookup(idx)
        bank.lookup(on_device)
    assert maps.is_cuda and present.tolist() == [True, False, True]


@pytest.mark.parametrize("shared", [False, True])
def test_the_banks_own_type_cast_leaves_the_presence_flags_bool_and_shared(shared):
    """Module.type casts every buffer: the bank casts its maps only, so `~present` keeps working and a shared
    bank's flags stay in the memory its workers hold."""
    bank = MaskBank(4, resolution=(2, 2))
    bank.put(torch.tensor([1]), torch.ones(1, 2, 2))
    if shared:
        bank.share_memory()
    bank.type(torch.float16)  # the bank's own dtype: allowed, shared or not
    assert bank.present.dtype == torch.bool and bank.present.tolist() == [False, True, False, False]
    assert bank.present.is_shared() == shared and bank.maps.is_shared() == shared
    if not shared:
        bank.type(torch.float32)
        assert bank.maps.dtype == torch.float32 and bank.present.dtype == torch.bool and bool((~bank.present).any())
