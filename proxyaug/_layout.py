"""How a [`ProxyDataset`][proxyaug.ProxyDataset]'s items map to samples and bank rows.

Two layouts, chosen with ``ProxyDataset(proxies=...)``:

- ``ReplaceLayout`` (``"replace"``): item ``i`` is sample ``i``,
  its map in bank row ``i``; a sample with a map is drawn as its proxy image.
- ``AppendLayout`` (``"append"``): ``2 * n`` items; the originals are
  items ``0 .. n - 1`` in bank rows ``0 .. n - 1`` (always empty), and item ``n + i``, sample ``i``
  again with its map in row ``n + i``, is live while sample ``i`` has a map. The live flags are kept
  in shared memory, so that running DataLoader workers serve the items a refresh adds.
"""

from __future__ import annotations

from typing import Any, Tuple

import torch

from ._checks import check_index

__all__ = ["ReplaceLayout", "AppendLayout", "LAYOUTS"]


class ReplaceLayout:
    """Item ``i`` is sample ``i``, its map in bank row ``i``.

    Examples:
        >>> layout = ReplaceLayout(4)
        >>> len(layout), layout.bank_rows, layout.locate(3), layout.rows(torch.tensor([1, 2])), layout.items()
        (4, 4, (3, 3), tensor([1, 2]), tensor([0, 1, 2, 3]))
    """

    name = "replace"

    def __init__(self, num_samples: int) -> None:
        self.num_samples = num_samples

    @property
    def bank_rows(self) -> int:
        """Rows the bank needs."""
        return self.num_samples

    def __len__(self) -> int:
        return self.num_samples

    def locate(self, index: int) -> Tuple[int, int]:
        """``(sample, bank row)`` of item ``index`` (``0 <= index < len(self)``)."""
        return index, index

    def rows(self, samples: Any) -> torch.Tensor:
        """Bank rows of ``samples``."""
        return check_index("samples", samples, size=self.num_samples)

    def items(self) -> torch.Tensor:
        """The items that can be drawn now, ascending."""
        return torch.arange(self.num_samples)

    def sync(self, present: torch.Tensor) -> None:
        """Follow the bank after it changed (``present``: its presence flags)."""


class AppendLayout(ReplaceLayout):
    """Originals as items ``0 .. n - 1``; item ``n + i`` is sample ``i`` again, map in row ``n + i``, live
    while sample ``i`` has a map.

    The length stays ``2 * n`` (samplers that fix their length when built, as ``DistributedSampler``
    does, keep working); [`ProxySampler`][proxyaug.ProxySampler] draws the live items only.

    Examples:
        >>> layout = AppendLayout(4)
        >>> present = torch.zeros(8, dtype=torch.bool); present[[4 + 1, 4 + 3]] = True
        >>> layout.sync(present)
        >>> len(layout), layout.bank_rows, layout.locate(7), layout.rows(torch.tensor([1, 3])), layout.items()
        (8, 8, (3, 7), tensor([5, 7]), tensor([0, 1, 2, 3, 5, 7]))
    """

    name = "append"

    def __init__(self, num_samples: int) -> None:
        super().__init__(num_samples)
        # extra item n + i is live (sample i has a map): in shared memory, so that running DataLoader
        # workers (persistent ones, the CPU path) see every refresh
        self.live = torch.zeros(num_samples, dtype=torch.bool).share_memory_()

    @property
    def bank_rows(self) -> int:
        return 2 * self.num_samples

    def __len__(self) -> int:
        return 2 * self.num_samples

    def locate(self, index: int) -> Tuple[int, int]:
        n = self.num_samples
        if index < n:
            return index, index
        if index >= 2 * n:
            raise IndexError(f"index {index} is out of range for a dataset of {2 * n} items (proxies='append': {n} originals, {n} extra slots).")
        sample = index - n
        if not bool(self.live[sample]):
            raise IndexError(
                f"item {index} is the extra slot of sample {sample}, which holds no map: with proxies='append' the "
                f"dataset keeps len(ds) == 2 * {n} and only the slots of samples with a map can be drawn. Draw with "
                "proxyaug.ProxySampler(ds), which draws the live items only, instead of shuffle=True or a plain sampler "
                "(and drop maps with reset=True only between epochs: ProxySampler fixes an epoch's items when it begins)."
            )
        return sample, index

    def rows(self, samples: Any) -> torch.Tensor:
        return super().rows(samples) + self.num_samples

    def items(self) -> torch.Tensor:
        n = self.num_samples
        return torch.cat([torch.arange(n), n + self.live.nonzero().flatten()])

    def sync(self, present: torch.Tensor) -> None:
        self.live.copy_(present[self.num_samples :].cpu())  # in place: workers share this memory


LAYOUTS = {layout.name: layout for layout in (ReplaceLayout, AppendLayout)}
"""The layouts by the name ``ProxyDataset(proxies=...)`` takes."""
