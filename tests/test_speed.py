import json

import pytest

pytest.importorskip("sklearn")
for _peer in ("pytorch_grad_cam", "torchcam", "captum"):  # the benchmark's peers: the [bench] extra
    pytest.importorskip(_peer)

from benchmarks import speed  # noqa: E402


def test_speed_benchmark_runs_and_renders(tmp_path, capsys):
    results = speed.main(["--preset", "smoke", "--out", str(tmp_path)])
    assert set(results["cases"]) == {"maps", "transform", "e2e", "thesis", "bank", "metrics", "formats", "transformer", "guided"}
    saved = json.loads((tmp_path / "speed-smoke.json").read_text())
    env = saved["environment"]
    assert env["versions"]["torch"] and env["commit"] is not None and env["versions"]["captum"] and env["versions"]["torchcam"]
    assert set(env["load"]["cases"]) == set(results["cases"])  # the machine's load around each case
    rows = saved["cases"]["maps"]
    assert {r["method"] for r in rows} == {"gradcam", "gradcam++", "eigencam"}
    by = {r["method"]: r for r in rows}
    # every peer that has the method, on the same model, batch, layer and classes
    assert set(by["gradcam"]["peers"]) == {"pytorch_grad_cam", "torchcam", "captum"}
    assert set(by["gradcam++"]["peers"]) == {"pytorch_grad_cam", "torchcam"} and set(by["eigencam"]["peers"]) == {"pytorch_grad_cam"}
    for r in rows:  # the ratios are what the tables publish: check they are the medians' ratios
        assert r["proxyaug_vs_forward"] == pytest.approx(r["forward"]["median_s"] / r["proxyaug"]["median_s"])
        assert r["proxyaug_vs_pgc"] == pytest.approx(r["pytorch_grad_cam"]["median_s"] / r["proxyaug"]["median_s"])
        for p in r["peers"].values():
            assert p["proxyaug_vs"] == pytest.approx(p["timing"]["median_s"] / r["proxyaug"]["median_s"])
        fastest = min(p["timing"]["median_s"] for p in r["peers"].values())
        assert r["proxyaug_vs_fastest_peer"] == pytest.approx(fastest / r["proxyaug"]["median_s"])
    # the same maps where the formula is the same (Eigen-CAM up to pytorch-grad-cam's arbitrary sign) ...
    for method, peer in (("gradcam", "pytorch_grad_cam"), ("gradcam", "torchcam"), ("gradcam", "captum"),
                         ("gradcam++", "pytorch_grad_cam"), ("eigencam", "pytorch_grad_cam")):
        assert by[method]["peers"][peer]["agreement"]["max_abs_diff"] < 1e-4, (method, peer)
    # ... and torchcam's Grad-CAM++, another weighting, stated as such
    tc = by["gradcam++"]["peers"]["torchcam"]
    assert tc["agreement"]["max_abs_diff"] > 1e-3 and "alpha" in tc["note"]
    formats = {r["variant"]: r for r in saved["cases"]["formats"]["rows"]}
    assert set(formats) == {"float32", "bf16 autocast", "channels_last", "bf16 autocast + channels_last"}
    assert formats["float32"]["maps_max_abs_diff_vs_float32"] == 0 and formats["channels_last"]["maps_max_abs_diff_vs_float32"] < 1e-4
    assert saved["cases"]["bank"]["7x7"]["bytes_per_image"] == 99
    vit = saved["cases"]["transformer"]  # the transformer-native maps beside a forward pass and torchcam's LeGrad
    assert [r["method"] for r in vit["rows"]] == ["rollout", "legrad", "gradcam", "torchcam:legrad"]
    assert vit["legrad_max_abs_diff_vs_torchcam"] < 1e-4 and vit["legrad_vs_torchcam"] > 0
    for r in vit["rows"]:
        assert r["vs_forward"] == pytest.approx(vit["forward"]["median_s"] / r["timing"]["median_s"])
    guided = saved["cases"]["guided"]  # each map-guided transform beside its map-free peer, and whole steps
    assert {"v2.CutMix", "Cutout (no map)", "KeepCutout", "SalientMix peak/mass", "step v2.CutMix", "step SalientMix + in-step maps",
            "step SalientMix + extra pass (peers)"} <= set(guided["rows"])
    plain = guided["rows"]["step v2.CutMix"]["timing"]["median_s"]
    assert guided["in_step_vs_cutmix_step"] == pytest.approx(guided["rows"]["step SalientMix + in-step maps"]["timing"]["median_s"] / plain)
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
    assert "#### Agreement with proxyaug's maps" in table and "captum" in table and "### Autocast and channels_last" in table
    capsys.readouterr()
    speed.main(["--render", str(tmp_path / "speed-smoke.json")])
    assert capsys.readouterr().out == table
    # the ImageNet estimate reads a fresh result as gpu.sh feeds it the GPU's
    from benchmarks.scale_estimate import main as scale

    e = scale(["--json", str(tmp_path / "speed-smoke.json"), "--model", "resnet18", "--out", str(tmp_path / "scale.md")])
    assert e["maps_images_per_s"] == by["gradcam++"]["proxyaug_images_per_s"] and "resnet18" in (tmp_path / "scale.md").read_text()


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


def test_blur_error_benchmark_measures_and_renders(monkeypatch, tmp_path):
    from benchmarks import blur_error

    monkeypatch.setattr(blur_error, "SIZES", (32,))
    blur_error.main(["--out", str(tmp_path)])
    rows = __import__("json").loads((tmp_path / "blur-error.json").read_text())["rows"]
    assert {r["images"] for r in rows} == {"smooth", "digits", "white noise", "sharp patterns"}
    assert all(r["max"] < 1e-6 for r in rows)  # exact below 192 px
    assert "| 32 | 1 | sharp patterns |" in (tmp_path / "blur-error.md").read_text()
