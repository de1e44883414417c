"""ProxyDataset: a thin owner of a MaskBank around any map-style dataset."""

from __future__ import annotations

import copy
import io
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from ._checks import check_choice, check_index, describe
from .attention import MapSpec, as_spec
from .bank import MaskBank
from ._cpu_path import CpuPath, fix_resolution, measure_resolution
from ._items import check_first_item, check_item, with_row
from ._layout import LAYOUTS
from ._mistakes import MistakeTracker
from ._report import RefreshReport

__all__ = ["ProxyDataset"]

PROXIES = tuple(LAYOUTS)


class ProxyDataset(Dataset):
    """Wrap a map-style dataset for Proxy Attention: yields ``(x, y, idx)`` and owns a [`MaskBank`][proxyaug.MaskBank].

    The base dataset must return ``(image, label)``, or a mapping with the keys ``"image"`` and
    ``"label"`` (a Hugging Face ``datasets`` row; then each item is a ``dict`` of the row's keys
    with ``"idx"`` added, which [`ProxyTransform`][proxyaug.ProxyTransform] takes as it is), with the image a tensor ``(C, H, W)``, float
    in [0, 1] or uint8 (then give [`refresh()`][proxyaug.refresh] a ``preprocess`` that converts it, as
    your training loop does), in a canonical frame (deterministic resize / crop, no random geometry): maps are
    computed and applied in that frame. Random augmentation belongs after the
    [`ProxyTransform`][proxyaug.ProxyTransform]. Item 0 is checked when the dataset is built
    (its form, and float values in [0, 1]: not normalised yet, not 0..255), so a malformed
    dataset fails here rather than an epoch later inside a DataLoader worker.

    Each item's ``idx`` is a *bank row*: where its map lives, what
    [`ProxyTransform`][proxyaug.ProxyTransform] and [`observe()`][proxyaug.ProxyDataset.observe]
    take. A *sample index* names an item of the wrapped dataset; [`refresh()`][proxyaug.refresh]
    and its report speak in sample indices, and [`rows()`][proxyaug.ProxyDataset.rows] converts.
    The two are equal unless ``proxies="append"``.

    With ``proxies="append"`` the originals stay untouched and every sample with a map appears
    again as an extra item, its proxy image (the thesis' other option). The length is fixed at
    ``2 * len(dataset)``: item ``len(dataset) + i`` is the extra slot of sample ``i``, its ``idx``
    the bank row that holds the map, so [`ProxyTransform`][proxyaug.ProxyTransform] turns exactly
    the extra items into proxies and your loop does not change. A slot is *live* while its sample
    has a map ([`live_items()`][proxyaug.ProxyDataset.live_items]); drawing one that is not raises
    an ``IndexError``. Draw with [`ProxySampler`][proxyaug.ProxySampler] (``shuffle=True``'s
    ``RandomSampler`` and ``DistributedSampler`` would draw empty slots): it draws the live items
    each epoch, so the epoch follows every refresh, on one process or sharded over ranks. Running
    DataLoader workers, persistent ones included, serve the items a refresh adds.

    It implements the [`Refreshable`][proxyaug.protocol.Refreshable] protocol that
    [`refresh()`][proxyaug.refresh] uses.

    Unknown attributes are forwarded to the base dataset
    (``ds.classes``), and the dataset pickles for DataLoader workers; a bank on an accelerator
    is left out of the pickle, since workers never need it and must not hold CUDA tensors, and a
    CPU bank that is not shared travels as a copy (a ``spawn`` worker's pickler would otherwise
    move it into shared memory). Save state with [`state_dict()`][proxyaug.ProxyDataset.state_dict].

    Args:
        dataset: the base dataset, ``dataset[i] -> (image tensor (C, H, W), label)`` or a mapping
            with the keys ``"image"`` and ``"label"``.
        bank: an existing bank of ``len(dataset)`` rows (``2 * len(dataset)`` with
            ``proxies="append"``); a new one is made when ``None``.
        resolution: map resolution of a new bank; ``None`` takes the target layer's.
        device: where a new bank lives (the device your batches are on, e.g. ``"cuda"``).
        dtype: storage dtype of a new bank's maps.
        proxies: ``"replace"``: a sample with a map is drawn as its proxy image; ``"append"``:
            it is drawn as the original and, as an extra item, as its proxy image.

    Examples:
        >>> from torch.utils.data import TensorDataset
        >>> base = TensorDataset(torch.rand(8, 3, 16, 16), torch.arange(8) % 2)
        >>> ds = ProxyDataset(base)
        >>> x, y, i = ds[5]
        >>> x.shape, int(y), i, len(ds), len(ds.bank)
        (torch.Size([3, 16, 16]), 1, 5, 8, 8)
        >>> ds.tensors[1].shape  # forwarded to the base dataset
        torch.Size([8])
        >>> import proxyaug as pa
        >>> extra = ProxyDataset(base, proxies="append")
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> _ = net[0].bias.data.copy_(torch.tensor([0.0, 10.0]))  # predicts class 1 for every image
        >>> report = pa.refresh(net, extra, indices=[2])  # sample 2 (label 0) is wrong: it gets a map
        >>> len(extra), extra[10][2], bool(extra[10][0].equal(extra[2][0])), extra.live_items().tolist()
        (16, 10, True, [0, 1, 2, 3, 4, 5, 6, 7, 10])
        >>> list(pa.ProxySampler(extra, shuffle=False))  # the originals and sample 2's proxy
        [0, 1, 2, 3, 4, 5, 6, 7, 10]
    """

    def __init__(
        self,
        dataset: Any,
        bank: Optional[MaskBank] = None,
        *,
        resolution: Union[Sequence[int], int, None] = None,
        device: Union[str, torch.device, None] = None,
        dtype: torch.dtype = torch.float16,
        proxies: str = "replace",
    ) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(f"dataset must be a map-style dataset with __getitem__ and __len__; got {type(dataset).__name__}.")
        n = len(dataset)
        if n < 1:
            raise ValueError("dataset is empty; expected at least one sample.")
        proxies = check_choice("proxies", proxies, PROXIES)
        check_first_item(dataset)  # now, not an epoch later inside a DataLoader worker
        self._layout = LAYOUTS[proxies](n)
        rows = self._layout.bank_rows
        if bank is None:
            bank = MaskBank(rows, resolution=resolution, device=device, dtype=dtype)
        elif not isinstance(bank, MaskBank) or len(bank) != rows:
            got = f"a bank of {len(bank)} samples" if isinstance(bank, MaskBank) else type(bank).__name__
            need = f"2 * len(dataset)={rows} rows (proxies='append')" if proxies == "append" else f"len(dataset)={n} samples"
            raise ValueError(f"bank must be a MaskBank of {need}; got {got}.")
        self.dataset, self.bank, self.proxies = dataset, bank, proxies
        self._layout.sync(bank.present)  # a bank given with maps already in it: their extra slots are live
        self.mistakes = MistakeTracker(n) if bank.device.type == "cpu" else MistakeTracker(n).to(bank.device)
        self.refreshes = 0
        self.last_report: Optional[RefreshReport] = None
        self._cpu_path: Optional[CpuPath] = None  # set by enable_cpu_path
        self._item_transform: Optional[Callable[[torch.Tensor], Any]] = None  # run on each item after the CPU path

    # -- dataset protocol ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._layout)

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in self.live_items().tolist())  # not len(self): an empty extra slot is not an item to draw

    def live_items(self) -> torch.Tensor:
        """The items that can be drawn now, ascending (CPU ``int64``): every item with ``proxies="replace"``;
        the originals and the extra slots of the samples with a map with ``proxies="append"``. What
        [`ProxySampler`][proxyaug.ProxySampler] draws each epoch."""
        return self._layout.items()

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        if index < 0:
            index += len(self)
        sample, row = self._layout.locate(index)
        item = self.dataset[sample]
        x, y = check_item(item, sample)
        if self._cpu_path is not None:  # the CPU path: replacement here, in the worker
            x = self._cpu_path(x, row)
        if self._item_transform is not None:
            x = self._item_transform(x)
        return with_row(item, x, y, row)

    # -- the Refreshable protocol ------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        """The samples of the wrapped dataset (checked: it must not have changed length)."""
        n = self._layout.num_samples
        if len(self.dataset) != n:
            raise RuntimeError(
                f"the dataset has {len(self.dataset)} samples but its bank was made for {n}: the wrapped dataset "
                "changed length. Build a new ProxyDataset for the new data."
            )
        return n

    def canonical(self, sample: int) -> Tuple[torch.Tensor, Any]:
        """Sample ``sample``'s ``(image, label)`` as the wrapped dataset yields it, validated: what maps are computed on."""
        sample = int(sample)
        return check_item(self.dataset[sample], sample)

    def rows(self, samples: Any) -> torch.Tensor:
        """The bank rows that hold the maps of base samples ``samples``.

        A *sample index* ``i`` names an item of the wrapped dataset (``dataset[i]``); a *bank row*
        names where a map lives, and is the ``idx`` that items carry and that
        [`ProxyTransform`][proxyaug.ProxyTransform] and [`observe()`][proxyaug.ProxyDataset.observe]
        take. They are equal unless ``proxies="append"``, where sample ``i``'s map lives in row
        ``len(dataset) + i`` (the row of its extra item).

        Examples:
            >>> from torch.utils.data import TensorDataset
            >>> base = TensorDataset(torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long))
            >>> ProxyDataset(base).rows([1, 3]), ProxyDataset(base, proxies="append").rows([1, 3])
            (tensor([1, 3]), tensor([5, 7]))
        """
        return self._layout.rows(samples)

    def commit(
        self,
        samples: Optional[torch.Tensor],
        maps: Optional[torch.Tensor],
        *,
        reset: bool,
        report: RefreshReport,
        scanned: Optional[torch.Tensor] = None,
    ) -> None:
        """Write a refresh's maps in one step, use up the mistakes it scanned, count it.

        Called by [`refresh()`][proxyaug.refresh] once all maps exist (see
        [`Refreshable.commit()`][proxyaug.protocol.Refreshable.commit]): ``samples`` are sample
        indices, ``scanned`` the samples whose observations it used up (``None``: all).
        """
        if samples is not None:
            self.bank.put(self.rows(samples), maps, clear_others=reset)
        elif reset:
            self.bank.clear()
        self._layout.sync(self.bank.present)
        self.mistakes.reset() if scanned is None else self.mistakes.forget(scanned)
        self.refreshes += 1
        self.last_report = report

    # -- the CPU path --------------------------------------------------------------------------
    def enable_cpu_path(
        self,
        transform: Optional[Callable[[torch.Tensor], Any]] = None,
        *,
        model: Optional[torch.nn.Module] = None,
        spec: Optional[MapSpec] = None,
        preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        **proxy: Any,
    ) -> "ProxyDataset":
        """Apply the maps inside ``__getitem__`` (in DataLoader workers), then ``transform``.

        For pipelines whose augmentation runs on the CPU (albumentations, torchvision v2): each
        item is replaced with [`ProxyTransform`][proxyaug.ProxyTransform] settings ``proxy``
        (``mode``, ``threshold``, ``weight``, ``p``, ``blur_sigma``) in its canonical frame, then
        ``transform`` (random augmentation, conversion) runs on it. The bank moves to shared memory,
        so maps that a later [`refresh()`][proxyaug.refresh] writes in the main process are
        seen by running workers, ``persistent_workers=True`` included, without restarting them.
        Refreshes still scan the canonical images.

        Shared memory is never reallocated, so the bank's map resolution must be the one the
        refreshes will produce. Pass ``model`` (and the ``spec`` and ``preprocess`` your refreshes
        will use): the resolution is then measured on item 0 with
        [`map_resolution()`][proxyaug.attention.map_resolution] and set, or checked against the
        bank's, now rather than at the first refresh an epoch later.

        Args:
            transform: applied to each ``(C, H, W)`` image after the replacement.
            model: the model refreshes will use; measures the map resolution on item 0.
            spec: as in [`refresh()`][proxyaug.refresh] (with ``model``).
            preprocess: as in [`refresh()`][proxyaug.refresh] (with ``model``).
            **proxy: [`ProxyTransform`][proxyaug.ProxyTransform] arguments.

        Returns:
            ``self``.

        Raises:
            ValueError: the bank is not on the CPU, its resolution is not fixed and no ``model`` is
                given, or it differs from the one ``model`` produces.

        Examples:
            >>> from torch.utils.data import TensorDataset
            >>> ds = ProxyDataset(TensorDataset(torch.ones(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)), resolution=(2, 2))
            >>> ds = ds.enable_cpu_path(mode="black", threshold=0.5, transform=lambda x: x * 2)
            >>> ds.bank.put(torch.tensor([1]), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]))
            >>> ds[0][0].sum().item(), ds[1][0].sum().item()  # sample 1 lost its top-left corner
            (32.0, 24.0)
            >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, stride=2, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
            >>> auto = ProxyDataset(TensorDataset(torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)))
            >>> auto.enable_cpu_path(model=net).bank.resolution  # measured on item 0
            (4, 4)
        """
        if self.bank.device.type != "cpu":
            raise ValueError(f"the CPU path needs the bank on the CPU; it is on {self.bank.device}. Build the dataset with device='cpu'.")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable; got {type(transform).__name__}.")
        if model is not None:
            fix_resolution(self.bank, measure_resolution(model, self.canonical(0)[0], as_spec(spec), preprocess))
        if self.bank.resolution is None:
            raise ValueError(
                "the CPU path needs a fixed map resolution, so that the bank's shared memory is never reallocated: "
                "pass model= (and spec=, preprocess= as for refresh) to measure it, or build the dataset with "
                "resolution= the target layer's (h, w), e.g. (7, 7) for a 224 px ResNet."
            )
        self.bank.share_memory()
        self._cpu_path = CpuPath(self.bank, **proxy)
        self._item_transform = transform
        return self

    def __getattr__(self, name: str) -> Any:
        dataset = self.__dict__.get("dataset")
        if dataset is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(dataset, name)

    def __getstate__(self) -> dict:
        # An accelerator bank stays out (workers must not hold CUDA tensors); an unshared CPU bank and the
        # observations travel as bytes, or a spawn worker's pickler would move them into shared memory.
        state = self.__dict__.copy()
        private = {}
        if self.bank.device.type != "cpu":
            state["bank"] = None
        elif not self.bank.maps.is_shared():
            private["bank"], state["bank"] = self.bank, None
        on_cpu = self.mistakes.flags.device.type == "cpu"
        private["mistakes"], state["mistakes"] = self.mistakes if on_cpu else MistakeTracker(self.mistakes.num_samples), None
        buffer = io.BytesIO()
        torch.save(private, buffer)
        state["_private_bytes"] = buffer.getvalue()
        return state

    def __setstate__(self, state: dict) -> None:
        private = state.pop("_private_bytes", None)
        self.__dict__.update(state)
        if private is not None:
            self.__dict__.update(torch.load(io.BytesIO(private), weights_only=False))

    def __deepcopy__(self, memo: dict) -> "ProxyDataset":
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def __repr__(self) -> str:
        return f"ProxyDataset({self.dataset!r}, maps={int(self.bank.present.sum()) if self.bank is not None else '?'}/{self._layout.num_samples})"

    def observe(self, idx: Any, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Record which samples of a training batch the model got wrong.

        When any were recorded since the last refresh, the next [`refresh()`][proxyaug.refresh] scans only
        those instead of the whole dataset. Runs on the logits' device without a host sync.

        Args:
            idx: the ``idx`` of the batch's items ``(B,)``: bank rows (with ``proxies="append"``
                an extra item counts for its original, also when both are in the batch).
            logits: model outputs ``(B, num_classes)``.
            labels: true classes ``(B,)``.

        Examples:
            >>> from torch.utils.data import TensorDataset
            >>> ds = ProxyDataset(TensorDataset(torch.rand(6, 1, 4, 4), torch.zeros(6, dtype=torch.long)))
            >>> ds.observe(torch.tensor([1, 4]), torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 0]))
            >>> ds.observed_wrong
            tensor([4])
        """
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise ValueError(f"logits must be a tensor of shape (B, num_classes); got {describe(logits)}.")
        rows = check_index("idx", idx, size=len(self.bank), length=logits.shape[0])
        self.mistakes.update(rows % self._layout.num_samples, logits, labels)

    @property
    def observed_wrong(self) -> torch.Tensor:
        """Sample indices recorded as wrong by [`observe()`][proxyaug.ProxyDataset.observe] on this rank since the
        last refresh (sorted, CPU; no collective: a refresh scans those of every rank)."""
        return self.mistakes.local()

    def state_dict(self, *, distributed: Optional[bool] = None) -> dict:
        """What a resumed run needs of this dataset: the bank, the refresh count (the default
        selection seed) and the mistakes ``observe`` recorded since the last refresh, on every rank.

        Under an initialised ``torch.distributed`` process group it is a collective, as torchmetrics'
        ``sync`` is: every rank must call it (Lightning does, for a callback's state), and each gets
        the union of every rank's observations, so a checkpoint written by rank 0 alone resumes with
        the candidates an uninterrupted run's next refresh would scan (the banks are equal already).
        ``distributed=False`` saves this rank's observations alone, with no collective (for a dataset
        only one rank refreshes, with ``refresh(distributed=False)``).

        Save it with the model, the optimizer, the schedule's ``state_dict()`` (on-plateau
        schedules), ``torch.get_rng_state()`` (the transform's draws when ``p < 1``, dropout) and
        the DataLoader generator's state (or the epoch of a [`ProxySampler`][proxyaug.ProxySampler]);
        restored, training continues exactly as if it had not stopped (``tests/test_resume.py``,
        ``tests/test_resume_ddp.py``).

        Examples:
            >>> from torch.utils.data import TensorDataset
            >>> ds = ProxyDataset(TensorDataset(torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)), resolution=(2, 2))
            >>> ds.bank.put(torch.tensor([3]), torch.rand(1, 2, 2))
            >>> again = ProxyDataset(TensorDataset(torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)))
            >>> again.load_state_dict(ds.state_dict())
            >>> again.bank.present.tolist(), again.refreshes
            ([False, False, False, True], 0)
        """
        if distributed is False:
            observed = self.mistakes.flags.bool().cpu()
        else:
            with self.mistakes.sync_context(dist_sync_fn=self.mistakes.dist_sync_fn):  # the union over ranks (none on one process)
                observed = self.mistakes.flags.bool().cpu()
        bank = {k: v.detach().cpu() for k, v in self.bank.state_dict().items()}
        return {"bank": bank, "refreshes": self.refreshes, "observed": observed}

    def load_state_dict(self, state: dict) -> None:
        """Restore what [`state_dict()`][proxyaug.ProxyDataset.state_dict] returned (validated first);
        the next refresh scans the observations of every rank that saved it."""
        missing = {"bank", "refreshes", "observed"} - set(state)
        if missing:
            raise KeyError(f"state lacks {sorted(missing)}; expected ProxyDataset.state_dict() output.")
        observed = state["observed"]
        n = self._layout.num_samples
        if observed is not None and (not isinstance(observed, torch.Tensor) or tuple(observed.shape) != (n,)):
            raise ValueError(f"state records observations of {describe(observed)}; this dataset has {n} samples.")
        self.bank.load_state_dict(state["bank"])
        self.refreshes = int(state["refreshes"])
        self.mistakes.reset() if observed is None else self.mistakes.load_state_dict({"flags": observed})
        self._layout.sync(self.bank.present)
