import json
import os

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from benchmarks import demo  # noqa: E402
from benchmarks.digits import load_digits_split  # noqa: E402


def test_split_is_fixed_and_disjoint():
    (a_tr, a_te), (b_tr, b_te) = load_digits_split(size=16), load_digits_split(size=16)
    assert a_tr.tensors[0].equal(b_tr.tensors[0]) and a_te.tensors[1].equal(b_te.tensors[1])
    assert len(a_tr) + len(a_te) == 1797 and a_tr.tensors[0].shape[1:] == (1, 16, 16)
    assert 0 <= float(a_tr.tensors[0].min()) and float(a_tr.tensors[0].max()) <= 1


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    results = demo.main(["--seeds", "0", "1", "--schedule", "1,p,p,1", "--size", "16", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "paired difference proxy - baseline" in printed and "baseline" in printed
    for name in ("results.json", "accuracy.png", "proxy_grid.png"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["summary"]["proxy"]["test_acc"]["n"] == 2
    runs = saved["runs"]
    assert {(r["arm"], r["seed"]) for r in runs} == {(a, s) for a in ("baseline", "proxy") for s in (0, 1)}
    # equal epochs and equal images for both arms; the proxy arm refreshed twice
    assert len({(r["epochs"], r["images_seen"]) for r in runs}) == 1
    assert all(len(r["refreshes"]) == 2 for r in runs if r["arm"] == "proxy")
    assert all(not r["refreshes"] for r in runs if r["arm"] == "baseline")
    assert results["paired_difference_proxy_minus_baseline"]["n"] == 2
    assert os.path.isfile(out / "proxy_grid.png")
