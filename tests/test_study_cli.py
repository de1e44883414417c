"""The study CLI's --report-only: it rebuilds every output from runs.jsonl, runs.csv included, so
runs trained in another folder and appended to runs.jsonl by key join the table."""

import csv
import json

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from benchmarks.study import cli  # noqa: E402

STUDY = """
datasets = ["digits"]
models = ["cnn"]
seeds = [0, 1]
schedule = "1"
size = 16
batch_size = 128
threads = 1
grids = 0
out = "{out}"

[[arms]]
name = "baseline"
kind = "none"
"""


def _rows(path):
    with open(path, newline="") as f:
        return [(r["arm"], r["seed"]) for r in csv.DictReader(f)]


def test_report_only_rewrites_runs_csv_with_runs_merged_from_another_folder(tmp_path):
    config = tmp_path / "study.toml"
    config.write_text(STUDY.format(out=tmp_path / "main"))
    cli.main(["--config", str(config), "--seeds", "0"])
    cli.main(["--config", str(config), "--seeds", "1", "--out", str(tmp_path / "other")])
    assert _rows(tmp_path / "main" / "runs.csv") == [("baseline", "0")]
    with open(tmp_path / "other" / "runs.jsonl") as src, open(tmp_path / "main" / "runs.jsonl", "a") as dst:
        dst.write(src.read())

    cli.main(["--config", str(config), "--report-only"])
    assert _rows(tmp_path / "main" / "runs.csv") == [("baseline", "0"), ("baseline", "1")]
    summary = json.loads((tmp_path / "main" / "summary.json").read_text())
    assert "baseline" in json.dumps(summary)
