import json

import pytest

pytest.importorskip("sklearn")

from benchmarks import speed  # noqa: E402


def test_speed_benchmark_runs_and_renders(tmp_path, capsys):
    results = speed.main(["--preset", "smoke", "--out", str(tmp_path)])
    assert set(results["cases"]) == {"maps", "transform", "e2e", "thesis", "bank"}
    saved = json.loads((tmp_path / "speed-smoke.json").read_text())
    assert saved["environment"]["versions"]["torch"] and saved["environment"]["commit"] is not None
    rows = saved["cases"]["maps"]
    assert {r["method"] for r in rows} == {"gradcam", "eigencam"}
    for r in rows:  # the ratios are what the tables publish: check they are the medians' ratios
        assert r["proxyaug_vs_forward"] == pytest.approx(r["forward"]["median_s"] / r["proxyaug"]["median_s"])
        assert r["proxyaug_vs_pgc"] == pytest.approx(r["pytorch_grad_cam"]["median_s"] / r["proxyaug"]["median_s"])
    assert saved["cases"]["bank"]["7x7"]["bytes_per_image"] == 99
    assert saved["cases"]["thesis"]["written"] == 8
    assert saved["verdicts"] and all(isinstance(v["met"], bool) for v in saved["verdicts"])
    table = (tmp_path / "speed-smoke.md").read_text()
    assert "### Map throughput" in table and "### Targets" in table and "resnet18" in table
    capsys.readouterr()
    speed.main(["--render", str(tmp_path / "speed-smoke.json")])
    assert capsys.readouterr().out == table


def test_unknown_case_is_refused(tmp_path):
    with pytest.raises(SystemExit, match=r"unknown case\(s\) \['nope'\]"):
        speed.main(["--preset", "smoke", "--cases", "nope", "--out", str(tmp_path)])
