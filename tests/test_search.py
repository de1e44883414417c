"""The regime search (issue 15): a grid with skip_test never reads the test split, and the search
ranks it on validation, writes a re-run of its best settings on fresh seeds, and states the odds."""

import dataclasses
import math

import pytest
from torch.utils.data import Dataset

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from benchmarks import data as data_module  # noqa: E402
from benchmarks.study import cli, runner, search  # noqa: E402
from benchmarks.study.config import load_study, read_config  # noqa: E402
from benchmarks.study.runner import load_done  # noqa: E402


class SplitTouched(AssertionError):
    pass


class Untouchable(Dataset):
    """A test split that fails on any access."""

    def __len__(self):
        raise SplitTouched("len(test)")

    def __getitem__(self, i):
        raise SplitTouched(f"test[{i}]")

    def __iter__(self):
        raise SplitTouched("iter(test)")

    def __getattr__(self, name):
        raise SplitTouched(f"test.{name}")


GRID = """
datasets = ["digits"]
models = ["cnn"]
seeds = [0]
schedule = "1,p,1"
size = 16
batch_size = 128
threads = 2
grids = 0
skip_test = {skip_test}
out = "{out}"

[[arms]]
name = "baseline"
kind = "none"

[[arms]]
name = "g"
kind = "proxy"
mode = ["blend", "black"]
select = "loss"
budget = [0.1, 32]

[[arms]]
name = "thesis"
kind = "proxy"
"""


@pytest.fixture
def trapped(monkeypatch):
    """load_data everywhere the harness calls it gives a test split that raises on any access."""
    real = data_module.load_data

    def load(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), test=Untouchable())

    for module in (runner, cli):
        monkeypatch.setattr(module, "load_data", load)


def _grid(tmp_path, skip_test=True):
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(skip_test="true" if skip_test else "false", out=tmp_path / "grid"))
    return str(path)


def test_the_trap_springs_when_the_test_split_is_evaluated(tmp_path, trapped):
    with pytest.raises(SplitTouched):
        cli.main(["--config", _grid(tmp_path, skip_test=False), "--arms", "baseline"])


def test_a_grid_never_reads_test_and_the_search_reruns_its_best_on_fresh_seeds(tmp_path, trapped, capsys):
    config = _grid(tmp_path)
    assert cli.main(["--config", config, "--estimate"])["runs"] == 6
    ranking = cli.main(["--config", config])["ranking"]  # estimate, training and ranking, test never touched
    assert len(ranking) == 6 and ranking == sorted(ranking, key=lambda e: -e["val_acc"])
    records = list(load_done(str(tmp_path / "grid" / "runs.jsonl")).values())
    assert len(records) == 6 and all(math.isnan(r["test_acc"]) and r["test_size"] == 0 for r in records)
    assert all(0 < r["val_acc"] <= 1 and len(r["val_acc_curve"]) == 3 for r in records)

    result = search.main(["--config", config, "--top", "2", "--seeds", "7", "8", "9"])
    finalists = result["finalists"]
    assert [f["arm"] for f in finalists] == [e["arm"] for e in ranking if e["kind"] != "none"][:2]

    rerun = load_study(result["rerun"], {})  # a valid study: the best two, their controls, the baseline
    assert rerun.seeds == [7, 8, 9] and not rerun.skip_test and rerun.out == str(tmp_path / "grid") + "-rerun"
    assert (rerun.schedule, rerun.size, rerun.datasets) == ("1,p,1", 16, ["digits"])
    arms = {a["name"]: a for a in rerun.arms}
    assert set(arms) == {"baseline", "top1", "top1-random-mask", "top2", "top2-random-mask"}
    for i, f in enumerate(finalists, 1):
        top, control = arms[f"top{i}"], arms[f"top{i}-random-mask"]
        assert {k: top.get(k) for k in f["settings"]} == f["settings"] and top["compare"] == [f"top{i}-random-mask"]
        assert control["kind"] == "random-mask" and all(control.get(k) == top.get(k) for k in ("select", "budget", "method", "threshold"))
    raw = read_config(result["rerun"])
    assert "skip_test" not in raw and raw["seeds"] == [7, 8, 9]

    md = (tmp_path / "grid" / "search.md").read_text()
    assert "**Settings tried: 5**" in md and "The test split was never read" in md
    assert f"E[max of 5] = {100 * result['noise_sd']:.2f} x 1.16" in md  # E[max of 5 standard normals] = 1.163
    assert "1 - 0.975^5 = 12%" in md and "1 - 0.975^2 = 4.9%" in md
    assert md.count("(re-run)") == 2


def test_the_search_refuses_what_could_have_seen_test(tmp_path):
    with pytest.raises(SystemExit, match=r"does not set skip_test = true"):
        search.main(["--config", _grid(tmp_path, skip_test=False)])
    with pytest.raises(SystemExit, match=r"--seeds \[0\] were used by the grid; the re-run needs fresh seeds"):
        search.main(["--config", _grid(tmp_path), "--seeds", "0", "1"])
    with pytest.raises(SystemExit, match=r"no finished runs of this grid"):
        search.main(["--config", _grid(tmp_path)])


def test_expected_max_and_noise():
    assert [round(search.expected_max(n), 4) for n in (1, 2, 3, 10)] == [0.0, 0.5642, 0.8463, 1.5388]
    recs = [{"dataset": "d", "model": "m", "arm": a, "kind": "proxy", "val_acc": v} for a, v in (("a", 0.5), ("a", 0.7), ("b", 0.6), ("b", 0.6))]
    sd, source = search.noise_sd(recs)
    assert math.isclose(sd, math.sqrt(0.02 / 2)) and "seeds of each arm of the grid" in source
    one_seed = [{"dataset": "d", "model": "m", "arm": a, "kind": "proxy", "val_acc": v} for a, v in (("a", 0.5), ("b", 0.7))]
    assert "conservative" in search.noise_sd(one_seed)[1] and search.noise_sd(one_seed, recs)[1].startswith("the seeds of each arm of the study")
    with pytest.raises(ValueError, match=r"n=0 is not valid"):
        search.expected_max(0)
