import json

import pytest

pytest.importorskip("sklearn")

from benchmarks import speed  # noqa: E402


def test_speed_benchmark_runs_and_renders(tmp_path, capsys):
    results = speed.main(["--preset", "smoke", "--out", str(tmp_path)])
    assert set(results["cases"]) == {"maps", "transform", "e2e", "thesis", "bank", "metrics"}
    saved = json.loads((tmp_path / "speed-smoke.json").read_text())
    assert saved["environment"]["versions"]["torch"] and saved["environment"]["commit"] is not None
    rows = saved["cases"]["maps"]
    assert {r["method"] for r in rows} == {"gradcam", "eigencam"}
    for r in rows:  # the ratios are what the tables publish: check they are the medians' ratios
        assert r["proxyaug_vs_forward"] == pytest.approx(r["forward"]["median_s"] / r["proxyaug"]["median_s"])
        assert r["proxyaug_vs_pgc"] == pytest.approx(r["pytorch_grad_cam"]["median_s"] / r["proxyaug"]["median_s"])
    assert saved["cases"]["bank"]["7x7"]["bytes_per_image"] == 99
    assert saved["cases"]["thesis"]["written"] == 8
    metrics = saved["cases"]["metrics"]
    assert {r["reference"] for r in metrics["rows"]} >= {"torchcam 0.5 DeletionInsertionMetric", "torchcam 0.5 ClassificationMetric"}
    for r in metrics["rows"]:
        assert r["ratio"] == pytest.approx(r["reference_timing"]["median_s"] / r["proxyaug"]["median_s"])
    v = metrics["values"]  # both sides scored the same maps: the timed work computes the same numbers
    for key in ("deletion_auc", "insertion_auc", "average_drop", "increase"):
        assert v[key] == pytest.approx(v[f"torchcam_{key}"], abs=1e-5)
    assert saved["verdicts"] and all(isinstance(v["met"], bool) for v in saved["verdicts"])
    table = (tmp_path / "speed-smoke.md").read_text()
    assert "### Map throughput" in table and "### Targets" in table and "resnet18" in table and "### Explanation metrics" in table
    capsys.readouterr()
    speed.main(["--render", str(tmp_path / "speed-smoke.json")])
    assert capsys.readouterr().out == table


def test_merge_adds_cases_to_an_earlier_result(tmp_path):
    speed.main(["--preset", "smoke", "--cases", "bank", "--out", str(tmp_path)])
    first = json.loads((tmp_path / "speed-smoke.json").read_text())
    speed.main(["--preset", "smoke", "--cases", "metrics", "--merge", "--out", str(tmp_path)])
    merged = json.loads((tmp_path / "speed-smoke.json").read_text())
    assert merged["cases"]["bank"] == first["cases"]["bank"] and merged["command"] == first["command"]
    assert set(merged["case_runs"]) == {"metrics"} and "--merge" in merged["case_runs"]["metrics"]["command"]
    assert any(v["target"].startswith("metrics ") for v in merged["verdicts"])
    table = (tmp_path / "speed-smoke.md").read_text()
    assert "### Bank memory" in table and "merged into this file" in table


def test_unknown_case_is_refused(tmp_path):
    with pytest.raises(SystemExit, match=r"unknown case\(s\) \['nope'\]"):
        speed.main(["--preset", "smoke", "--cases", "nope", "--out", str(tmp_path)])


def test_imagenet_estimate_arithmetic():
    from benchmarks.scale_estimate import IMAGENET, estimate, render

    results = {
        "json": "x.json", "environment": {"device": "test device", "commit": "abc"},
        "cases": {"bank": {"7x7": {"bytes_per_image": 99}},
                  "maps": [{"model": "m", "method": "gradcam++", "forward_images_per_s": 1000.0, "proxyaug_images_per_s": 500.0}]},
    }
    e = estimate(results, "m", "gradcam++", wrong=0.3, fraction=0.2, gpus=[1, 8])
    one, eight = e["rows"]
    maps = round(0.2 * 0.3 * IMAGENET)
    assert one["maps"] == maps
    assert one["full_scan_s"] == pytest.approx(IMAGENET / 1000 + maps / 500)
    assert eight["full_scan_s"] == pytest.approx(one["full_scan_s"] / 8)
    assert one["observed_scan_s"] == pytest.approx(0.3 * IMAGENET / 1000 + maps / 500)
    assert one["bank_mb_per_rank"] == pytest.approx(99 * IMAGENET / 1e6)
    assert "test device" in render(e)
