"""Staged captures: concatenated, gathered from every rank, deduplicated, saved and restored.

A staged batch is the tuple ``(rows, maps, wrong, score, ok, canonical)``: the bank rows, the
maps in the bank's dtype, whether each prediction was wrong, the policy's score, whether the
step's ``A`` and ``dL/dA`` were finite, and whether the step's image was the canonical one (only
those take part in a commit). They stay on the step's device until a commit.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

import torch

from .._checks import check_index
from .._distributed import Shard

__all__ = ["concat", "collect", "gather", "last_of_each", "with_kept", "from_state", "STATE_KEYS"]

STATE_KEYS = ("rows", "maps", "wrong", "score", "ok")
"""What [`MapCapture.state_dict()`][proxyaug.MapCapture.state_dict] holds, one entry per staged sample."""


def concat(staged: List[Tuple[torch.Tensor, ...]]) -> Tuple[torch.Tensor, ...]:
    """The staged batches' ``(rows, maps, wrong, score, ok, canonical)``, each concatenated (empty ones when none).

    Examples:
        >>> concat([])[0].shape
        torch.Size([0])
        >>> one = (torch.tensor([1]), torch.zeros(1, 2, 2), *[torch.tensor([True])] * 4)
        >>> concat([one, one])[0]
        tensor([1, 1])
    """
    if not staged:
        e = torch.empty(0)
        return e.long(), torch.empty(0, 0, 0), e.bool(), e, e.bool(), e.bool()
    # on the latest step's device: a batch restored by load_state_dict lives on the bank's, which need not be the step's
    return tuple(torch.cat([b[k].to(staged[-1][k].device) for b in staged]) for k in range(6))


def collect(local: Tuple[torch.Tensor, ...], shard: Optional[Shard]) -> Tuple[torch.Tensor, ...]:
    """This rank's staged samples of canonical images, or every rank's under a ``shard`` (a collective):
    ``(rows, maps, wrong, score, ok)``, all on the host but ``maps``.

    Examples:
        >>> rows, maps, wrong, score, ok = collect(concat([]), None)
        >>> rows.numel(), tuple(maps.shape)
        (0, (0, 0, 0))
    """
    rows, maps, wrong, score, ok, canonical = local
    keep = canonical.cpu()
    rows, wrong, score, ok = (t.cpu()[keep] for t in (rows, wrong, score, ok))
    maps = maps[keep.to(maps.device)]
    if shard is not None:
        return gather(shard, rows, maps, wrong, score, ok)
    return rows, maps, wrong, score, ok


def gather(shard: Shard, *local: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Every rank's ``(rows, maps, wrong, score, ok)`` on every rank, on the host.

    Each rank's ``k``-th sample lands at position ``k * world_size + rank`` (padded to the
    longest rank's, the padding dropped), so later steps come later on every rank.
    """
    rows, maps, wrong, score, ok = local
    m = int(shard.max(torch.tensor([rows.numel()]))[0])
    h, w = shard.max(torch.tensor(tuple(maps.shape[-2:]) if rows.numel() else (0, 0))).tolist()
    n, k = m * shard.world_size, rows.numel()

    def pad(t: torch.Tensor, fill: float, shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        out = torch.full((m, *shape), fill, dtype=dtype)
        out[:k] = t.cpu().to(dtype).reshape(k, *shape)
        return shard.gather_rows(out, n, shape)

    rows = pad(rows, -1, (), torch.long)
    real = rows >= 0  # not padding
    return (rows[real], pad(maps, 0, (h, w), torch.float32)[real], pad(wrong, 0, (), torch.uint8).bool()[real],
            pad(score, 0, (), torch.float32)[real], pad(ok, 0, (), torch.uint8).bool()[real])


def last_of_each(samples: torch.Tensor) -> torch.Tensor:
    """Positions of each sample's last occurrence in ``samples``, in sample order.

    Examples:
        >>> last_of_each(torch.tensor([5, 2, 5, 0]))
        tensor([3, 1, 2])
    """
    uniq, inverse = torch.unique(samples, return_inverse=True)
    last = torch.full((uniq.numel(),), -1, dtype=torch.long)
    return last.scatter_reduce(0, inverse, torch.arange(samples.numel()), reduce="amax")


def with_kept(ds: Any, considered: torch.Tensor, chosen: torch.Tensor, new: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """What a commit with ``reset`` writes: the ``chosen`` samples' ``new`` maps plus the earlier maps of the
    samples it did not ``consider`` (written back, so that the bank's ``clear_others`` keeps them), and
    how many maps it drops (samples considered, not chosen, that had one).

    Examples:
        >>> from torch.utils.data import TensorDataset
        >>> import proxyaug as pa
        >>> ds = pa.ProxyDataset(TensorDataset(torch.rand(3, 1, 2, 2), torch.zeros(3).long()), resolution=(1, 1))
        >>> ds.bank.put(torch.tensor([0, 2]), torch.ones(2, 1, 1))
        >>> samples, maps, dropped = with_kept(ds, torch.tensor([0, 1]), torch.tensor([1]), torch.zeros(1, 1, 1))
        >>> samples, dropped  # 1 chosen, 2 not considered (kept), 0 considered and not chosen (dropped)
        (tensor([1, 2]), 1)
    """
    n, bank = ds.num_samples, ds.bank
    everyone = torch.arange(n)
    present = bank.present[ds.rows(everyone).to(bank.device)].cpu()
    seen = torch.zeros(n, dtype=torch.bool)
    seen[considered] = True
    picked = torch.zeros(n, dtype=torch.bool)
    picked[chosen] = True
    kept = everyone[present & ~seen]
    dropped = int((present & seen & ~picked).sum())
    if not kept.numel():
        return chosen, new, dropped
    old = bank.get(ds.rows(kept))[0]
    if chosen.numel() and tuple(old.shape[-2:]) != tuple(new.shape[-2:]):  # new maps at another resolution: start over
        return chosen, new, dropped + kept.numel()
    return torch.cat([chosen, kept]), torch.cat([new.to(old.device), old]), dropped


def from_state(state: Mapping[str, Any], shard: Optional[Shard], *, rows: int, device: torch.device, dtype: torch.dtype) -> Tuple[torch.Tensor, ...]:
    """The staged batch this rank holds of a saved state (validated): positions ``rank, rank + world, ...``
    under a ``shard``, so that the next commit's gather puts every sample back in its saved order once.

    Examples:
        >>> state = {"rows": torch.tensor([3, 1]), "maps": torch.rand(2, 2, 2), "wrong": torch.tensor([True, False]),
        ...          "score": torch.zeros(2), "ok": torch.ones(2, dtype=torch.bool)}
        >>> from_state(state, None, rows=4, device=torch.device("cpu"), dtype=torch.float16)[0]
        tensor([3, 1])
    """
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise KeyError(f"state lacks {missing}; expected MapCapture.state_dict() output.")
    n = state["rows"].numel() if isinstance(state["rows"], torch.Tensor) else -1
    check_index("state['rows']", state["rows"], size=rows)
    maps = state["maps"]
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3 or maps.shape[0] != n:
        raise ValueError(f"state['maps'] must be ({n}, h, w), one map per staged row; got {tuple(getattr(maps, 'shape', ()))}.")
    for key in ("wrong", "score", "ok"):
        if not isinstance(state[key], torch.Tensor) or tuple(state[key].shape) != (n,):
            raise ValueError(f"state[{key!r}] must hold {n} entries, one per staged row; got {tuple(getattr(state[key], 'shape', ()))}.")
    mine = shard.positions(n) if shard is not None else torch.arange(n)
    return (
        state["rows"].long()[mine].to(device), maps[mine].to(device, dtype), state["wrong"].bool()[mine].to(device),
        state["score"].float()[mine].to(device), state["ok"].bool()[mine].to(device), torch.ones(mine.numel(), dtype=torch.bool, device=device),
    )
