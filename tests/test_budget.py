"""The selection budget (issue 15): the thesis rule by default, a share of the scanned images or a
count, so that ranking policies keep mapping once the model gets its training images right."""

import math

import pytest
import torch
from torch.utils.data import TensorDataset

import proxyaug as pa
from proxyaug.selection import SELECT, budget_size, check_budget, choose

from .conftest import predictions


def test_check_budget_accepts_the_three_forms():
    assert check_budget(None) is None
    assert check_budget(0.05) == 0.05 and isinstance(check_budget(1.0), float)
    assert check_budget(256) == 256 and isinstance(check_budget(torch.tensor(3).item()), int)


@pytest.mark.parametrize(
    "value, error, match",
    [
        (0, ValueError, r"budget=0 is not valid; expected None \(the thesis rule: fraction of the wrong images\), a float in \(0, 1\]"),
        (-3, ValueError, r"budget=-3 is not valid; expected None"),
        (0.0, ValueError, r"budget=0.0 is not valid; expected None"),
        (float("nan"), ValueError, r"budget=nan is not valid; expected None"),
        (float("inf"), ValueError, r"budget=inf is not valid; expected None"),
        (100.0, ValueError, r"budget=100.0 is not valid; a float is a share of the scanned images, in \(0, 1\]; for a count of images pass an int \(budget=100\)"),
        (2.5, ValueError, r"budget=2.5 is not valid; a float is a share .* pass an int \(budget=N\)"),
        (True, TypeError, r"budget must be None \(the thesis rule.*; got True \(bool\)"),
        ("64", TypeError, r"budget must be None .*; got '64' \(str\)"),
        (torch.tensor(0.1), TypeError, r"budget must be None .*\(Tensor\)"),
    ],
)
def test_check_budget_refuses_the_rest_with_a_message_that_says_what_a_budget_is(value, error, match):
    with pytest.raises(error, match=match):
        check_budget(value)


@pytest.mark.parametrize(
    "budget, wrong, scanned, expect",
    [
        (None, 0, 1000, 0),  # the thesis rule starves once nothing is wrong
        (None, 12, 1000, 2),  # round(0.2 * 12)
        (None, 1, 1000, 1),  # at least one when any is wrong
        (0.05, 0, 1000, 50),  # a share of the scanned images, whatever is wrong
        (0.05, 7, 10, 1),  # round(0.5) up: at least one
        (0.05, 0, 0, 0),  # nothing scanned, nothing chosen
        (1.0, 3, 40, 40),
        (64, 0, 1000, 64),  # a count
        (64, 0, 10, 64),  # the budget, not what is available: the policies cap at what they can choose
    ],
)
def test_budget_size(budget, wrong, scanned, expect):
    assert budget_size(budget, wrong=wrong, scanned=scanned, fraction=0.2) == expect


def _scan():
    indices = torch.arange(100, 120)
    wrong = torch.zeros(20, dtype=torch.bool)
    wrong[[3, 11, 17]] = True
    score = torch.arange(20, dtype=torch.float32).flip(0)  # index 100 scores highest
    return indices, wrong, score


@pytest.mark.parametrize("select", ["loss", "margin", "entropy"])
def test_ranking_policies_keep_choosing_when_nothing_is_wrong(select):
    indices, _, score = _scan()
    none_wrong = torch.zeros(20, dtype=torch.bool)
    assert choose(select, indices, none_wrong, score, 0.2, 0).numel() == 0  # the thesis rule: nothing
    assert choose(select, indices, none_wrong, score, 0.2, 0, budget=0.25).tolist() == list(range(100, 105))
    assert choose(select, indices, none_wrong, score, 0.2, 0, budget=3).tolist() == [100, 101, 102]
    assert choose(select, indices, none_wrong, score, 0.2, 0, budget=500).numel() == 20  # capped at the scanned images


def test_wrong_maps_only_wrong_images_and_stops_at_their_number():
    indices, wrong, _ = _scan()
    for budget in (0.5, 10, 3):
        got = choose("wrong", indices, wrong, None, 0.2, seed=0, budget=budget)
        assert got.tolist() == [103, 111, 117]  # all three wrong images, none of the right ones
    got = choose("wrong", indices, wrong, None, 0.2, seed=0, budget=2)
    assert got.numel() == 2 and set(got.tolist()) <= {103, 111, 117}
    assert choose("wrong", indices, torch.zeros(20, dtype=torch.bool), None, 0.2, seed=0, budget=0.5).numel() == 0


def test_random_draws_the_budget_from_every_scanned_image_reproducibly():
    indices, wrong, _ = _scan()
    a = choose("random", indices, wrong, None, 0.2, seed=4, budget=0.5)
    assert a.numel() == 10 and torch.equal(a, choose("random", indices, wrong, None, 0.2, seed=4, budget=10))
    assert not set(a.tolist()) <= {103, 111, 117}
    assert torch.equal(a, choose("random", indices.flip(0), wrong.flip(0), None, 0.2, seed=4, budget=10))


@pytest.mark.parametrize("select", SELECT)
def test_the_default_budget_is_the_thesis_rule(select):
    indices, wrong, score = _scan()
    score = None if select in ("wrong", "random") else score
    expect = choose(select, indices, wrong, score, 0.7, seed=1)
    assert expect.numel() == 2  # round(0.7 * 3)
    assert torch.equal(choose(select, indices, wrong, score, 0.7, seed=1, budget=None), expect)


def _fitted(model, base):
    """``base`` relabelled with the model's own predictions: the model gets every image right."""
    return TensorDataset(base.tensors[0], predictions(model, base))


def test_refresh_with_a_budget_maps_after_the_model_fits_its_training_set(model, base):
    fitted = _fitted(model, base)
    starved = pa.refresh(model, pa.ProxyDataset(fitted), select="loss")
    assert (starved.wrong, starved.chosen, starved.written, starved.budget, starved.budget_rule) == (0, 0, 0, 0, "thesis")
    assert "no wrong predictions among 40 scanned images" in str(starved)

    ds = pa.ProxyDataset(fitted)
    report = pa.refresh(model, ds, spec=pa.MapSpec("gradcam"), select="loss", budget=0.25)
    assert (report.wrong, report.budget, report.chosen, report.written, report.budget_rule) == (0, 10, 10, 10, "share 0.25")
    x, y = fitted.tensors
    with torch.no_grad():
        model.eval()
        loss = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
    assert report.indices.tolist() == sorted(loss.topk(10).indices.tolist())  # the ten highest losses
    assert torch.equal(ds.bank.present.nonzero().flatten(), report.indices)
    assert "chosen 10, wrote 10" in str(report)


def test_refresh_wrong_with_a_budget_above_the_wrong_images_maps_all_of_them(model, base):
    wrong = (predictions(model, base) != base.tensors[1]).nonzero().flatten()
    assert 5 < wrong.numel() < 30
    report = pa.refresh(model, pa.ProxyDataset(base), budget=30)
    assert (report.budget, report.chosen, report.budget_rule) == (30, wrong.numel(), "count 30")
    assert torch.equal(report.indices, wrong)
    assert f"chosen {wrong.numel()} of a budget of 30 (count 30)" in str(report)


def test_a_share_of_scanned_counts_only_what_was_scanned(model, base):
    report = pa.refresh(model, pa.ProxyDataset(base), select="entropy", budget=0.5, indices=range(10))
    assert (report.scanned, report.budget, report.chosen) == (10, 5, 5) and set(report.indices.tolist()) <= set(range(10))


def test_refresh_checks_the_budget_before_scanning(model, base):
    ds = pa.ProxyDataset(base)
    with pytest.raises(ValueError, match=r"budget=1.5 is not valid"):
        pa.refresh(model, ds, budget=1.5)
    with pytest.raises(TypeError, match=r"budget must be None"):
        pa.refresh(model, ds, budget="all")
    assert ds.refreshes == 0 and not ds.bank.present.any()


def test_lightning_callback_takes_and_checks_the_budget():
    pytest.importorskip("lightning.pytorch")
    from proxyaug.integrations.lightning import ProxyAttention

    ds = pa.ProxyDataset(TensorDataset(torch.rand(8, 3, 8, 8), torch.zeros(8, dtype=torch.long)))
    assert ProxyAttention(ds, "1,p", refresh={"select": "loss", "budget": 4}).refresh_kwargs == {"select": "loss", "budget": 4}
    with pytest.raises(ValueError, match=r"budget=0 is not valid"):  # when it is built, not at the first refresh
        ProxyAttention(ds, "1,p", refresh={"budget": 0})


def test_harness_budget_setting():
    from benchmarks.study.arms.refreshing import budget_of, selection_text
    from benchmarks.study.config import Study, arm_settings, expand_arms
    from benchmarks.study.runner import run_key

    study = Study(schedule="1,p,1")
    plain = arm_settings({"name": "p", "kind": "proxy"}, study)
    thesis = arm_settings({"name": "p", "kind": "proxy", "budget": "thesis"}, study)
    share = arm_settings({"name": "p", "kind": "proxy", "budget": 0.05, "select": "loss"}, study)
    assert "budget" not in plain and plain == thesis  # the thesis rule keeps the keys of runs made before the setting
    assert run_key("d", "cnn", plain, 0, study) == run_key("d", "cnn", thesis, 0, study) != run_key("d", "cnn", share, 0, study)
    assert share["budget"] == 0.05 and budget_of(share) == 0.05 and budget_of(thesis) is None
    assert [a["name"] for a in expand_arms([{"name": "p", "kind": "proxy", "budget": ["thesis", 0.05, 64]}])] == [
        "p-budget=thesis", "p-budget=0.05", "p-budget=64"]
    assert selection_text(share) == "top 5% of scanned by loss"
    assert selection_text({"select": "wrong", "budget": 64}) == "up to 64 images, wrong only"
    with pytest.raises(ValueError, match=r"budget=2.0 is not valid"):
        budget_of({"budget": 2.0})
    assert math.isclose(budget_of({"budget": 1.0}), 1.0)
