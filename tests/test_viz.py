"""Pictures (proxyaug.viz): the proxy grid, its outline and its titles."""

import pytest
import torch

from proxyaug import viz

CYAN = torch.tensor([0.0, 1.0, 1.0])


def _square(h=12, w=12, box=(3, 9, 4, 8)):
    """A full-resolution map that is 1 inside ``box`` (rows r0:r1, cols c0:c1) and 0 elsewhere."""
    m = torch.zeros(1, h, w)
    r0, r1, c0, c1 = box
    m[0, r0:r1, c0:c1] = 1.0
    return m


def _cell(grid, row, col, h, w, top=0, pad=2):
    y, x = top + pad + row * (h + pad), pad + col * (w + pad)
    return grid[:, y : y + h, x : x + w]


def test_outline_marks_the_edge_of_the_thresholded_region_on_the_proxy():
    x = torch.full((1, 1, 12, 12), 0.5)
    maps = _square()
    plain = viz.proxy_grid(x, maps, x)
    grid = viz.proxy_grid(x, maps, x, outline=0.5)
    assert grid.shape == plain.shape
    cyan = (_cell(grid, 0, 2, 12, 12) == CYAN.view(3, 1, 1)).all(0)
    mask = maps[0] > 0.5
    inner = torch.zeros_like(mask)
    inner[4:8, 5:7] = True  # the mask less its one-pixel edge
    assert torch.equal(cyan, mask & ~inner)
    assert not (_cell(plain, 0, 2, 12, 12) == CYAN.view(3, 1, 1)).all(0).any()
    # only the proxy column changes
    for col in (0, 1):
        assert torch.equal(_cell(grid, 0, col, 12, 12), _cell(plain, 0, col, 12, 12))


def test_outline_follows_the_image_border_and_is_empty_without_a_region():
    x = torch.zeros(2, 3, 10, 10)
    maps = torch.zeros(2, 10, 10)
    maps[0, :4, :4] = 1.0  # in the corner: the border counts as an edge
    grid = viz.proxy_grid(x, maps, x, outline=0.85)
    cyan0 = (_cell(grid, 0, 2, 10, 10) == CYAN.view(3, 1, 1)).all(0)
    cyan1 = (_cell(grid, 1, 2, 10, 10) == CYAN.view(3, 1, 1)).all(0)
    assert cyan0[0, :4].all() and cyan0[:4, 0].all() and cyan0[3, :4].all() and not cyan0[1:3, 1:3].any()
    assert not cyan1.any()


def test_titles_add_a_band_above_the_columns():
    x = torch.rand(2, 3, 48, 48)
    maps = torch.rand(2, 3, 3)
    plain = viz.proxy_grid(x, maps, x)
    grid = viz.proxy_grid(x, maps, x, titles=("original", "map", "proxy"))
    band = grid.shape[1] - plain.shape[1]
    assert band > 8 and grid.shape[2] == plain.shape[2]
    assert torch.equal(grid[:, band:], plain)
    for col in range(3):  # dark text on white above each column
        x0 = 2 + col * 50
        assert (grid[:, :band, x0 : x0 + 48] < 0.5).any(), col
    with pytest.raises(ValueError, match=r"titles must be three strings \(original, map, proxy\); got \['a', 'b'\]"):
        viz.proxy_grid(x, maps, x, titles=["a", "b"])


def test_area_label_on_the_proxy_with_titles_and_outline():
    x = torch.full((1, 3, 48, 48), 0.5)
    maps = torch.zeros(1, 48, 48)
    maps[0, 30:40, 30:40] = 1.0
    titled = viz.proxy_grid(x, maps, x, titles=("original", "map", "proxy"))
    labelled = viz.proxy_grid(x, maps, x, outline=0.5, titles=("original", "map", "proxy"))
    band = titled.shape[1] - 52
    corner = lambda g: _cell(g, 0, 2, 48, 48, top=band)[:, :14, :30]  # noqa: E731
    assert not torch.equal(corner(titled), corner(labelled))  # "4 %" (100 of 2304 pixels) drawn there
    assert viz.mask_area(maps, (48, 48), 0.5).tolist() == pytest.approx([100 / 2304])


def test_save_proxy_grid_titles_the_columns_by_default(tmp_path):
    from PIL import Image

    x = torch.rand(2, 3, 32, 32)
    maps = torch.rand(2, 4, 4)
    viz.save_proxy_grid(str(tmp_path / "g.png"), x, maps, x, outline=0.85)
    with Image.open(tmp_path / "g.png") as im:
        w, h = im.size
    assert w == viz.proxy_grid(x, maps, x).shape[2] and h > viz.proxy_grid(x, maps, x).shape[1]
    viz.save_proxy_grid(str(tmp_path / "plain.png"), x, maps, x, titles=None)
    with Image.open(tmp_path / "plain.png") as im:
        assert im.size[1] == viz.proxy_grid(x, maps, x).shape[1]


def test_bad_outline_is_refused():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"outline=1.5 is out of range; expected a number in \[0, 1\]"):
        viz.proxy_grid(x, torch.rand(1, 2, 2), x, outline=1.5)
