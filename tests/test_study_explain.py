"""The study measures explanations (benchmarks/study/explain.py, explain_report.py): the fixed
images and their regions, the metrics, training left bit-identical, re-measuring old records."""

import csv
import json

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from benchmarks.data import load_data  # noqa: E402
from benchmarks.study import main  # noqa: E402
from benchmarks.study.config import CONFIG_DIR, Study, load_study  # noqa: E402
from benchmarks.study.explain import KEYS, explanation_set, measure  # noqa: E402
from benchmarks.study.models import build_model  # noqa: E402

TINY = ["--preset", "tiny", "--arms", "baseline", "proxy", "random-mask", "--threads", "2"]


def _config(tmp_path, explain):
    """The tiny preset with explanations on ``explain`` images."""
    body = open(f"{CONFIG_DIR}/tiny.toml").read()
    path = tmp_path / f"tiny-explain{explain}.toml"
    path.write_text(f"explain = {explain}\nexplain_steps = 4\n" + body)
    return str(path)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The tiny preset's baseline / proxy / random-mask, 2 seeds, first without explanations, then
    the same folder with them (the runs are measured again and replace their records)."""
    tmp = tmp_path_factory.mktemp("explain")
    out = tmp / "out"
    main(TINY + ["--out", str(out)])
    before = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    summary = main(["--config", _config(tmp, 24), *TINY[2:], "--out", str(out)])
    after = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    return out, before, after, summary


def test_the_set_is_fixed_stratified_and_knows_the_cue(tmp_path):
    study = Study(explain=20, size=16)
    data = load_data("shortcut-digits", size=16)
    a, b = explanation_set(data, study), explanation_set(data, study)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.x.shape == (20, 1, 16, 16) and sorted(a.y.tolist()) == sorted(list(range(10)) * 2)
    cue, ink = a.regions["cue"], a.regions["object"]
    assert cue.sum(dim=(1, 2)).tolist() == [16] * 20  # 2x2 of 8x8, scaled to 16 px: 4x4
    assert not (cue & ink).any() and ink.any(dim=(1, 2)).all()
    assert a.x[:, 0][cue].mean() > 0.85  # the cue is bright (bilinear edges), as in training
    plain = explanation_set(load_data("digits", size=16), study)
    assert "cue" not in plain.regions and torch.equal(plain.y, a.y)
    far = ~torch.nn.functional.max_pool2d(cue.float().unsqueeze(1), 5, 1, 2)[:, 0].bool()  # away from the cue's blur
    assert torch.equal(plain.x[:, 0][far], a.x[:, 0][far])
    test_x = torch.stack([data.test[i][0] for i in range(len(data.test))])
    assert all(any(torch.equal(p, t) for t in test_x) for p in plain.x)  # they are test images


def test_measure_gives_every_metric_and_draws_no_random_numbers():
    study = Study(explain=10, size=16, explain_steps=3)
    eset = explanation_set(load_data("shortcut-digits", size=16), study)
    torch.manual_seed(0)
    model = build_model("cnn", 10, 1, 16)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    model.train()
    out = measure(model, eset, lambda x: (x - 0.5) / 0.5, {"method": "gradcam"}, study)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert set(out) == set(KEYS) | {"maps"} and out["maps"].shape[0] == 10
    for k in KEYS:
        if k.endswith(("energy", "pointing", "drop", "increase", "deletion", "insertion")) or k == "acc":
            assert 0.0 <= out[k] <= 1.0, k


def test_measuring_leaves_training_bit_identical_and_replaces_records(measured):
    out, before, after, _ = measured
    assert len(after) == len(before) == 6 and all("explain" not in r for r in before)
    old = {r["key"]: r for r in before}
    for r in after:
        assert set(r["explain"]) == set(KEYS) and r["explain_settings"]["explain"] == 24
        assert [e["epoch"] for e in r["explain_curve"]] == [1, 3, 4]  # each refresh point, and the end
        for k in ("test_acc_curve", "val_acc_curve", "loss_curve", "rounds"):
            assert r[k] == old[r["key"]][k] or k == "rounds" and [
                {a: b for a, b in x.items() if a != "seconds"} for x in r[k]] == [{a: b for a, b in x.items() if a != "seconds"} for x in old[r["key"]][k]]
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert all(row["explain_eval_cue_energy"] for row in rows)


def test_the_report_has_an_explanations_section_and_grids(measured):
    out, _, _, _ = measured
    report = (out / "report.md").read_text()
    section = report[report.index("## Explanations"):]
    assert "cue energy" in section and "proxy | random-mask | cue energy" in section
    assert "grids/explain-shortcut-digits-cnn.png" in section
    assert (out / "grids" / "explain-shortcut-digits-cnn.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    group = summary["explanations"]["shortcut-digits / cnn"]
    assert set(group["arms"]) == {"baseline", "proxy", "random-mask"}
    assert {(c["arm"], c["versus"]) for c in group["comparisons"]} == {("proxy", "baseline"), ("random-mask", "baseline"), ("proxy", "random-mask")}


@pytest.mark.parametrize("setting, message", [
    ({"explain": -1}, "explain=-1 is not valid"),
    ({"explain_steps": 0}, "explain_steps=0 is not valid"),
    ({"explain": 5, "explain_method": "nope"}, "explain_method: method='nope' is not supported"),
    ({"explain": 5, "skip_test": True}, "skip_test=True forbids"),
])
def test_bad_explanation_settings_are_refused_at_load(setting, message):
    with pytest.raises(ValueError, match=message):
        load_study("tiny", setting)
