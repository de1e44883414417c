"""The study's pictures read without the code (benchmarks/study/plots.py, grids.py, report.py):
one colour per arm in every plot, accuracy bars from zero, "re-split" only where an arm re-splits,
grids that name what they show, and a report that shows its pictures."""

import re

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

import matplotlib.colors  # noqa: E402
import matplotlib.figure  # noqa: E402

from benchmarks.study.config import Study  # noqa: E402
from benchmarks.study.curves_plots import curve_plots  # noqa: E402
from benchmarks.study.grids import save_grid  # noqa: E402
from benchmarks.study.plots import arm_colors, plots  # noqa: E402
from benchmarks.study.report import report  # noqa: E402
from benchmarks.study.stats import summarize  # noqa: E402

ARMS = [("baseline", "none"), ("proxy", "proxy"), ("random-mask", "random-mask"), ("thesis-protocol", "thesis-protocol")]


def _records(arms):
    def record(arm, kind, seed, k):
        curve = [0.5 + 0.1 * e + 0.002 * k + 0.001 * seed for e in range(5)]
        return {"dataset": "digits", "model": "cnn", "arm": arm, "kind": kind, "seed": seed, "test_acc": curve[-1],
                "val_acc": curve[-1], "wall_s": 1.0, "masked_area_mean": 0.0, "maps_final": 0, "settings": {"fraction": 0.2},
                "test_acc_curve": curve, "rounds": []}

    return [record(a, kind, s, k) for k, (a, kind) in enumerate(arms) for s in (0, 1, 2)]


@pytest.fixture
def figures(monkeypatch):
    """Every figure saved while the test runs, by file name: ``(figure, path)``."""
    saved = {}
    save = matplotlib.figure.Figure.savefig

    def spy(fig, path, *args, **kwargs):
        saved[str(path).rsplit("/", 1)[-1]] = fig
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    return saved


def _hex(color):
    return matplotlib.colors.to_hex(color)


def _plot(tmp_path, arms, order=None):
    records = _records(arms)
    study = Study(schedule="1,p,1,p,1", arms=[{"name": a, "kind": k} for a, k in (order or arms)], out=str(tmp_path))
    plots(str(tmp_path), records, summarize(records), study)


def test_an_arm_has_one_colour_in_every_plot(tmp_path, figures):
    _plot(tmp_path, ARMS)
    want = arm_colors([a for a, _ in ARMS])
    assert len(set(want.values())) == len(ARMS) and want["baseline"] == "#7f7f7f"
    lines = {line.get_label(): _hex(line.get_color()) for line in figures["accuracy-digits-cnn.png"].axes[0].get_lines()
             if not line.get_label().startswith("_")}
    assert lines == want
    for name, arms in (("bars.png", [a for a, _ in ARMS]), ("differences.png", [a for a, _ in ARMS[1:]])):
        ax = figures[name].axes[0]
        labels = [t.get_text() for t in ax.get_yticklabels()]
        bars = [_hex(p.get_facecolor()) for p in ax.patches]
        assert labels == arms and bars == [want[a] for a in arms], name
    # the curves study colours its arms the same way
    curve_records = [{"arm": a, "steps": 10, "subset_size": 100, "eval_steps": [5, 10], "test_acc_curve": [0.5, 0.6]} for a, _ in ARMS]
    comps = [{"arm": a, "versus": "baseline", "size": 100, "n": 3, "mean": 0.01, "adj_low": 0.0, "adj_high": 0.02} for a, _ in ARMS[1:]]
    summary = {"d / m": {"arms": {a: {} for a, _ in ARMS}, "sizes": [100], "comparisons": comps,
                         "per_size": {100: {"arms": {a: {"test_acc": {"mean": 0.6, "std": 0.01}} for a, _ in ARMS}}}}}
    curve_plots(str(tmp_path), curve_records, summary, [a for a, _ in ARMS])
    for name in ("curves.png", "curve-differences.png", "curve-steps.png"):
        ax = figures[name].axes[0]
        shown = {t.get_text(): _hex(h.get_color()) for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)}
        assert shown == {a: c for a, c in want.items() if name != "curve-differences.png" or a != "baseline"}, name


def test_colours_follow_the_config_order_not_the_records(tmp_path, figures):
    _plot(tmp_path, ARMS[:3], order=[ARMS[0], ARMS[2], ARMS[1]])
    ax = figures["bars.png"].axes[0]
    colours = dict(zip([t.get_text() for t in ax.get_yticklabels()], [_hex(p.get_facecolor()) for p in ax.patches]))
    assert colours == arm_colors(["baseline", "random-mask", "proxy"]) != arm_colors(["baseline", "proxy", "random-mask"])


def test_the_accuracy_bars_start_at_zero(tmp_path, figures):
    _plot(tmp_path, ARMS)
    lo, hi = figures["bars.png"].axes[0].get_xlim()
    assert lo == 0 and hi == 100  # a 0.2 pp gap looks as small as it is; differences.png shows it with its interval


def _words(fig):
    ax = fig.axes[0]
    return " ".join([ax.get_xlabel(), ax.get_ylabel(), ax.get_title(), *(t.get_text() for t in ax.get_legend().get_texts())])


def test_re_split_is_said_only_when_an_arm_re_splits(tmp_path, figures):
    _plot(tmp_path, ARMS[:3])
    assert "re-split" not in _words(figures["accuracy-digits-cnn.png"])
    assert "refresh" in figures["accuracy-digits-cnn.png"].axes[0].get_xlabel()
    _plot(tmp_path, ARMS)
    assert "thesis-protocol re-splits" in _words(figures["accuracy-digits-cnn.png"])


def test_the_report_shows_its_pictures(tmp_path):
    records = _records(ARMS[:3])
    study = Study(schedule="1,p,1,p,1", seeds=[0, 1, 2], arms=[{"name": a, "kind": k} for a, k in ARMS[:3]], out=str(tmp_path))
    (tmp_path / "grids").mkdir()
    (tmp_path / "grids" / "digits-cnn-proxy-seed0-refresh1.png").write_bytes(b"")
    report(study, records, "python -m benchmarks.study", 1.0)
    text = (tmp_path / "report.md").read_text()
    links = re.findall(r"!\[[^\]]+\]\(([^)\s]+)\)", text)
    assert {"differences.png", "bars.png", "accuracy-digits-cnn.png", "grids/digits-cnn-proxy-seed0-refresh1.png"} <= set(links)
    assert not any(link.startswith("/") for link in links)  # relative: they work beside the report and in the docs' copies
    assert all((tmp_path / link).exists() for link in links)
    assert "random-mask-seed0-refresh1" not in text  # no link to a grid that was never drawn


class _Arm:
    """What save_grid asks of an arm, on 8x8 images: the right half of each map above the threshold."""

    spec = {"name": "proxy", "mode": "blend", "weight": 0.1, "threshold": 0.5, "method": "gradcam++"}
    grid_titles = ("original", "map", "proxy")

    def __init__(self):
        self.x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        self.maps = torch.zeros(2, 8, 8)
        self.maps[:, :, 4:] = 1.0
        self.out = self.x * (1 - 0.1 * self.maps.unsqueeze(1))

    def pictures(self, rows):
        return self.x, self.maps, self.out

    def originals(self, rows):
        return self.x, torch.tensor([3, 1])

    def full_size(self, maps):
        return maps


def test_a_grid_names_what_it_shows(tmp_path, figures):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4), torch.nn.Dropout(0.5))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0]))  # predicts class 1 for every image
    model.train()
    model[2].eval()  # a module left in another mode than its parent stays so
    save_grid(str(tmp_path / "g.png"), _Arm(), torch.tensor([0, 1]), model=model, preprocess=lambda x: x,
              title="digits / cnn / arm proxy: seed 0, refresh 2 (after epoch 5)", class_names=["a", "b", "c", "d"], chosen=37)
    assert model.training and model[1].training and not model[2].training
    fig = figures["g.png"]
    assert fig._suptitle.get_text() == "digits / cnn / arm proxy: seed 0, refresh 2 (after epoch 5)"
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in axes[:4]] == ["original", "map", "proxy", "|proxy - original|"]
    rows = [axes[4 * r].get_ylabel() for r in range(2)]
    assert rows == ["true: d\npredicted: b\n(wrong)", "true: b\npredicted: b\n(right)"]
    caption = fig._supxlabel.get_text().replace("\n", " ")
    assert "Cyan outline" in caption and "threshold 0.5" in caption and "n\u00a0%: their share of the image" in caption
    assert "2 of the 37" in caption and "at most 10 % darker" in caption
    proxy = axes[2]
    assert any(_hex(c) == "#00ffff" for coll in proxy.collections for c in coll.get_edgecolor())  # the outline
    assert [t.get_text() for t in proxy.texts] == ["50 %"]  # the share of the image inside it
    diff = torch.as_tensor(axes[3].images[0].get_array())
    assert torch.allclose(diff, (_Arm().out - _Arm().x).abs()[0, 0]) and diff[:, 4:].gt(0).any() and diff[:, :4].eq(0).all()


def test_a_run_titles_its_grids_with_arm_seed_and_refresh(tmp_path, figures):
    from benchmarks.study import main

    main(["--preset", "tiny", "--arms", "proxy", "--seeds", "1", "--threads", "1", "--out", str(tmp_path)])
    for k, epoch in ((1, 2), (2, 4)):  # "1,p,1,p,1": refreshes after the 0-based epochs 1 and 3
        fig = figures[f"shortcut-digits-cnn-proxy-seed1-refresh{k}.png"]
        assert fig._suptitle.get_text() == f"shortcut-digits / cnn / arm proxy: seed 1, refresh {k} (after epoch {epoch})"
        rows = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel() and ax.get_label() != "<colorbar>"]
        assert rows and all(re.fullmatch(r"true: \d\npredicted: \d\n\((right|wrong)\)", r) for r in rows), rows
    assert "![shortcut-digits / cnn / proxy: what the arm did at its first refresh (seed 1)](grids/shortcut-digits-cnn-proxy-seed1-refresh1.png)" \
        in (tmp_path / "report.md").read_text()


def test_the_curve_differences_leave_out_sizes_with_fewer_than_three_seeds(tmp_path, figures):
    comps = [{"arm": "proxy", "versus": "baseline", "size": n, "n": k, "mean": 0.01, "adj_low": -0.01, "adj_high": 0.03}
             for n, k in ((100, 3), (200, 2))] + [{"arm": "random-mask", "versus": "baseline", "size": 100, "n": 2, "mean": 0.0,
                                                  "adj_low": -0.9, "adj_high": 0.9}]
    records = [{"arm": a, "steps": 10, "subset_size": n, "eval_steps": [5, 10], "test_acc_curve": [0.5, 0.6]}
               for a in ("baseline", "proxy", "random-mask") for n in (100, 200)]
    arms = {a: {"test_acc": {"mean": 0.6, "std": 0.01}} for a in ("baseline", "proxy", "random-mask")}
    summary = {"d / m": {"arms": {a: {} for a in arms}, "sizes": [100, 200], "comparisons": comps,
                         "per_size": {100: {"arms": arms}, 200: {"arms": arms}}}}
    curve_plots(str(tmp_path), records, summary, list(arms))
    ax = figures["curve-differences.png"].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["proxy"]  # random-mask: 2 seeds only
    (bars,) = [c for c in ax.containers if c.get_label() == "proxy"]
    assert len(bars.lines[0].get_xdata()) == 1  # proxy at 200: 2 seeds only
