"""How a [`ProxyDataset`][proxyaug.ProxyDataset]'s items map to samples and bank rows.

Two layouts, chosen with ``ProxyDataset(proxies=...)``:

- [`ReplaceLayout`][proxyaug.layout.ReplaceLayout] (``"replace"``): item ``i`` is sample ``i``,
  its map in bank row ``i``; a sample with a map is drawn as its proxy image.
- [`AppendLayout`][proxyaug.layout.AppendLayout] (``"append"``): the originals are items
  ``0 .. n - 1`` in bank rows ``0 .. n - 1`` (always empty), and every sample with a map appears
  again as an extra item whose map lives in row ``n + i``; the list of extra items is kept in
  shared memory, so that running DataLoader workers serve the items a refresh adds.
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
        >>> len(layout), layout.bank_rows, layout.locate(3), layout.rows(torch.tensor([1, 2]))
        (4, 4, (3, 3), tensor([1, 2]))
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

    def sync(self, present: torch.Tensor) -> None:
        """Follow the bank after it changed (``present``: its presence flags)."""


class AppendLayout(ReplaceLayout):
    """Originals as items ``0 .. n - 1``; each sample with a map again as an extra item, map in row ``n + i``.

    Examples:
        >>> layout = AppendLayout(4)
        >>> present = torch.zeros(8, dtype=torch.bool); present[[4 + 1, 4 + 3]] = True
        >>> layout.sync(present)
        >>> len(layout), layout.bank_rows, layout.locate(5), layout.rows(torch.tensor([1, 3]))
        (6, 8, (3, 7), tensor([5, 7]))
    """

    name = "append"

    def __init__(self, num_samples: int) -> None:
        super().__init__(num_samples)
        # the samples with a map, in order (the first `count` entries), in shared memory so that
        # running DataLoader workers (persistent ones, the CPU path) see every refresh
        self.extra = torch.zeros(num_samples, dtype=torch.long).share_memory_()
        self.count = torch.zeros(1, dtype=torch.long).share_memory_()

    @property
    def bank_rows(self) -> int:
        return 2 * self.num_samples

    def __len__(self) -> int:
        return self.num_samples + int(self.count)

    def locate(self, index: int) -> Tuple[int, int]:
        if index < self.num_samples:
            return index, index
        k = index - self.num_samples
        if k >= int(self.count):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} items.")
        sample = int(self.extra[k])
        return sample, self.num_samples + sample

    def rows(self, samples: Any) -> torch.Tensor:
        return super().rows(samples) + self.num_samples

    def sync(self, present: torch.Tensor) -> None:
        found = present[self.num_samples :].nonzero().flatten().cpu()
        self.extra[: found.numel()] = found  # in place: workers share this memory
        self.count.fill_(found.numel())


LAYOUTS = {layout.name: layout for layout in (ReplaceLayout, AppendLayout)}
"""The layouts by the name ``ProxyDataset(proxies=...)`` takes."""
