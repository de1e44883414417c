import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import proxyaug as pa

L = pytest.importorskip("lightning.pytorch")
from proxyaug.integrations.lightning import ProxyAttention  # noqa: E402

from .conftest import SmallCNN  # noqa: E402


class Module(L.LightningModule):
    def __init__(self, ds):
        super().__init__()
        torch.manual_seed(0)
        self.net, self.ds, self.changed = SmallCNN(), ds, 0

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        canonical = self.ds.dataset.tensors[0][idx]
        self.changed += int((x != canonical).flatten(1).any(1).sum())  # what the callback did
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _trainer(tmp_path, epochs, callback):
    return L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=str(tmp_path), callbacks=[callback])


def _ds():
    g = torch.Generator().manual_seed(0)
    return pa.ProxyDataset(TensorDataset(torch.rand(32, 3, 16, 16, generator=g), torch.randint(0, 4, (32,), generator=g)))


def test_trainer_refreshes_transforms_and_checkpoints(tmp_path):
    ds = _ds()
    module = Module(ds)
    callback = ProxyAttention(ds, "1,p,1,p", transform=pa.ProxyTransform(ds.bank, mode="black", threshold=0.5), refresh={"fraction": 1.0})
    trainer = _trainer(tmp_path, 4, callback)
    trainer.fit(module, DataLoader(ds, batch_size=8, shuffle=True))
    assert len(callback.reports) == 2 and ds.refreshes == 2
    assert ds.bank.present.sum() == len(set().union(*(set(r.indices.tolist()) for r in callback.reports)))
    assert module.changed > 0  # batches after the first refresh were transformed on the device
    assert all(not m._forward_hooks for m in module.modules())

    path = tmp_path / "fit.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["callbacks"]
    restored_ds = _ds()
    restored = ProxyAttention(restored_ds, "1,p,1,p", refresh={"fraction": 1.0})
    restored.load_state_dict(next(iter(state.values())))
    assert torch.equal(restored_ds.bank.present, ds.bank.present) and restored_ds.refreshes == 2


class DictRows(torch.utils.data.Dataset):
    """Hugging Face-style rows: dicts with 'image' and 'label'."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return {"image": x, "label": y}


class DictModule(Module):
    def training_step(self, batch, batch_idx):
        x, y = batch["image"], batch["label"]
        self.changed += int((x != self.ds.dataset.base.tensors[0][batch["idx"]]).flatten(1).any(1).sum())
        logits = self(x)
        return {"loss": nn.functional.cross_entropy(logits, y), "logits": logits.detach()}


@pytest.mark.parametrize("with_capture", [False, True], ids=["refresh", "capture"])
def test_dict_batches_of_mapping_rows_are_transformed_observed_and_captured(tmp_path, with_capture):
    ds = pa.ProxyDataset(DictRows(_ds().dataset))
    kw = {"capture": pa.MapCapture(ds, fraction=1.0)} if with_capture else {"refresh": {"fraction": 1.0}, "observe": True}
    callback = ProxyAttention(ds, "1,p,1,p", transform=pa.ProxyTransform(ds.bank, mode="black", threshold=0.5), **kw)
    module = DictModule(ds)
    _trainer(tmp_path, 4, callback).fit(module, DataLoader(ds, batch_size=8, shuffle=True))
    assert len(callback.reports) == 2 and int(ds.bank.present.sum()) > 0
    assert all(r.source == ("capture" if with_capture else "observed") for r in callback.reports)
    assert module.changed > 0  # dict batches after the first refresh were transformed on the device


def test_a_batch_without_bank_rows_is_refused_with_what_it_got(tmp_path):
    ds = _ds()
    loader = DataLoader(TensorDataset(*ds.dataset.tensors), batch_size=8)
    with pytest.raises(TypeError, match=r"ProxyAttention expects batches \(x, y, idx\), or dicts with the keys 'image', 'label' and 'idx', "
                                        r"from a proxyaug.ProxyDataset loader; got a list of 2 items"):
        _trainer(tmp_path, 1, ProxyAttention(ds, "1,p")).fit(Module(ds), loader)


def test_misuse_is_explained():
    with pytest.raises(ValueError, match=r"on_plateau schedule needs monitor="):
        ProxyAttention(_ds(), pa.ProxySchedule.on_plateau())
    with pytest.raises(TypeError, match=r"dataset must be a proxyaug.ProxyDataset"):
        ProxyAttention(TensorDataset(torch.rand(2, 1)))
    ds, other = _ds(), _ds()
    with pytest.raises(TypeError, match=r"transform must be a proxyaug.ProxyTransform; got dict"):
        ProxyAttention(ds, transform={"mode": "black"})
    with pytest.raises(ValueError, match=r"transform reads another bank than the dataset's"):
        ProxyAttention(ds, transform=pa.ProxyTransform(other.bank))
    with pytest.raises(TypeError, match=r"capture must be a proxyaug.MapCapture; got bool"):
        ProxyAttention(ds, capture=True)
    with pytest.raises(ValueError, match=r"capture writes into another dataset than the callback's"):
        ProxyAttention(ds, capture=pa.MapCapture(other))
    with pytest.raises(ValueError, match=r"pass capture= .* or refresh= .*, not both"):
        ProxyAttention(ds, capture=pa.MapCapture(ds), refresh={"fraction": 0.5})
    with pytest.raises(TypeError, match=r"refresh must be a dict of refresh\(\) arguments"):
        ProxyAttention(ds, refresh=0.2)
    with pytest.raises(ValueError, match=r"observe=False does not apply with capture="):
        ProxyAttention(ds, capture=pa.MapCapture(ds), observe=False)


class Observing(Module):
    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        logits = self(x)
        return {"loss": nn.functional.cross_entropy(logits, y), "logits": logits.detach()}


def test_blur_sigma_observe_and_refresh_arguments(tmp_path, monkeypatch):
    ds = _ds()
    callback = ProxyAttention(ds, "1,p,1,p", transform=pa.ProxyTransform(ds.bank, mode="blur", blur_sigma=1.5), refresh={"fraction": 1.0})
    assert callback.transform.blur_sigma == 1.5
    scans = []
    original = ds.observe

    def spy(idx, logits, labels):
        scans.append(len(idx))
        original(idx, logits, labels)

    monkeypatch.setattr(ds, "observe", spy)
    _trainer(tmp_path, 4, callback).fit(Observing(ds), DataLoader(ds, batch_size=8, shuffle=True))
    assert len(callback.reports) == 2 and sum(scans) == 4 * 32
    assert all(r.source == "observed" for r in callback.reports)  # refreshes scanned only what was observed wrong


def test_refresh_arguments_are_checked_when_the_callback_is_built():
    with pytest.raises(TypeError, match=r"refresh= holds \['blur'\], which refresh\(\) does not take; expected some of: .*budget"):
        ProxyAttention(_ds(), "1,p", refresh={"blur": 2.0})
    with pytest.raises(ValueError, match=r"budget=100.0 is not valid"):
        ProxyAttention(_ds(), "1,p", refresh={"budget": 100.0})
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'mode'"):  # 0.1's copy of ProxyTransform's signature is gone
        ProxyAttention(_ds(), "1,p", mode="black")


def test_observe_true_needs_logits(tmp_path):
    ds = _ds()
    callback = ProxyAttention(ds, "1,p", observe=True)
    with pytest.raises(ValueError, match=r"observe=True needs training_step to return the logits"):
        _trainer(tmp_path, 1, callback).fit(Module(ds), DataLoader(ds, batch_size=8))


class Skipping(Observing):
    """Skips every other batch the Lightning way: training_step returns None."""

    def training_step(self, batch, batch_idx):
        if batch_idx % 2:
            return None
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("with_capture", [False, True])
def test_a_training_step_returning_none_skips_the_batch(tmp_path, with_capture):
    ds = _ds()
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="net.features.3"), fraction=1.0) if with_capture else None
    callback = ProxyAttention(ds, "1,p", capture=capture, refresh=None if with_capture else {"fraction": 1.0})
    module = Skipping(ds)
    _trainer(tmp_path, 2, callback).fit(module, DataLoader(ds, batch_size=8))  # batches 1 and 3 skipped; refresh after epoch 2
    assert len(callback.reports) == 1
    if with_capture:  # only the two trained batches were staged, and the hooks are off
        assert callback.reports[0].scanned == 16 and set(callback.reports[0].indices.tolist()) <= set(range(8)) | set(range(16, 24))
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())
    else:  # only the trained batches' mistakes were recorded
        assert callback.reports[0].source == "observed" and set(callback.reports[0].indices.tolist()) <= set(range(8)) | set(range(16, 24))


class _Order(torch.utils.data.Sampler):
    """Items in a fixed order: a resumed loader that goes on where the interrupted one stopped."""

    def __init__(self, items):
        self.items = list(items)

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)


class _Deterministic(Observing):
    def __init__(self, ds):
        super().__init__(ds)
        self.net.drop.p = 0.0  # a resumed fit does not replay the interrupted one's dropout draws


def test_a_checkpoint_saved_mid_epoch_carries_the_staged_maps_and_a_resumed_fit_commits_them(tmp_path):
    def fit(sampler, ckpt_path=None, checkpoint=None):
        ds = _ds()
        capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="net.features.3"), select="random", budget=32)
        callback = ProxyAttention(ds, "p", capture=capture)  # commit after epoch 0
        callbacks = [callback] + ([checkpoint] if checkpoint else [])
        trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=str(tmp_path), callbacks=callbacks)
        trainer.fit(_Deterministic(ds), DataLoader(ds, batch_size=8, sampler=sampler), ckpt_path=ckpt_path)
        return ds, callback

    # the whole epoch, with a checkpoint after its second batch (16 samples staged, none committed)
    every_two = L.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1, filename="{step}")
    full, full_callback = fit(range(32), checkpoint=every_two)
    mid = tmp_path / "step=2.ckpt"
    saved = torch.load(mid, weights_only=False)["callbacks"]
    staged = next(v for k, v in saved.items() if k.startswith("ProxyAttention"))["capture"]
    assert torch.equal(staged["rows"], torch.arange(16)) and staged["maps"].shape == (16, 8, 8)
    # resumed from it: Lightning runs the epoch's last two batches (our loader goes on at item 16)
    resumed, callback = fit(list(range(16, 32)) + list(range(16)), ckpt_path=str(mid))
    (report,) = callback.reports
    assert report.scanned == 32 and report.written == 32 == full_callback.reports[0].written
    assert torch.equal(resumed.bank.present, full.bank.present) and resumed.bank.present.all()
    torch.testing.assert_close(resumed.bank.maps, full.bank.maps, atol=0, rtol=0)


class Manual(Observing):
    """Manual optimisation: training_step runs its own backward and returns nothing."""

    def __init__(self, ds):
        super().__init__(ds)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        opt = self.optimizers()
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        return None  # an ordinary step here, not a skipped one


def test_manual_optimisation_returning_none_is_not_taken_for_a_skipped_batch(tmp_path):
    ds = _ds()
    capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="net.features.3"))
    callback = ProxyAttention(ds, "1,p", capture=capture)
    with pytest.raises(ValueError, match=r"capture needs training_step to return the logits"):  # not silently discarded
        _trainer(tmp_path, 2, callback).fit(Manual(ds), DataLoader(ds, batch_size=8))
