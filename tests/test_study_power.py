"""The study report's power table: the paired spread, the smallest detectable difference and the
seeds a planned effect needs, from the same records as the intervals."""

import math
import statistics

import pytest

pytest.importorskip("scipy")

from benchmarks.study.curves import detectable, seeds_for  # noqa: E402
from benchmarks.study.report import _power  # noqa: E402
from benchmarks.study.stats import paired, summarize  # noqa: E402


def _records(diffs, base=(0.90, 0.91, 0.89, 0.90)):
    """A baseline and one arm whose per-seed differences to it are ``diffs``."""
    rec = lambda arm, kind, seed, acc: {"dataset": "fashion-mnist", "model": "cnn", "arm": arm, "kind": kind, "seed": seed,  # noqa: E731
                                        "test_acc": acc, "val_acc": acc, "wall_s": 1.0, "masked_area_mean": 0.0, "maps_final": 0,
                                        "settings": {}}
    return [rec("baseline", "none", s, b) for s, b in enumerate(base)] + [
        rec("cutmix", "cutmix", s, b + d) for s, (b, d) in enumerate(zip(base, diffs))]


def test_paired_reports_the_spread_of_the_differences():
    d = paired([0.93, 0.90, 0.92], [0.90, 0.90, 0.90])
    assert d["sd"] == pytest.approx(statistics.stdev([0.03, 0.0, 0.02]))
    assert math.isnan(paired([0.9], [0.8])["sd"])


def test_the_power_table_follows_the_paired_spread():
    diffs = [0.004, -0.002, 0.006, 0.0]
    summary = summarize(_records(diffs))
    lines = _power(summary)
    (row,) = [line for line in lines if line.startswith("| fashion-mnist / cnn | cutmix | baseline |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    sd = statistics.stdev(diffs)
    assert cells[3] == "4" and cells[4] == f"{100 * sd:.2f}" and cells[5] == f"{100 * detectable(sd, 4):.2f}"
    assert cells[6:] == [str(seeds_for(sd, 0.01)), str(seeds_for(sd, 0.005))]
    assert int(cells[6]) <= int(cells[7])  # half the effect needs more seeds


def test_a_wide_spread_needs_more_seeds_than_the_table_counts():
    lines = _power(summarize(_records([0.05, -0.06, 0.04, -0.05])), most=20)
    (row,) = [line for line in lines if "| cutmix |" in line]
    assert row.endswith("| > 20 | > 20 |")


def test_one_seed_gives_no_power_row():
    assert _power(summarize(_records([0.01], base=(0.9,)))) == []
