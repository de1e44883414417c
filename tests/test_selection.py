"""Selection policies (proxyaug.selection): budgets, ranking, reproducibility."""

import pytest
import torch

from proxyaug.selection import SELECT, budget_size, choose


def _thesis_subset(indices, fraction, seed):
    """The thesis rule's draw: ``fraction`` of the wrong ``indices`` at random from ``seed``."""
    return choose("wrong", indices, torch.ones(indices.numel(), dtype=torch.bool), None, fraction, seed)


def _scan(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    indices = torch.arange(100, 100 + n)
    wrong = torch.rand(n, generator=g) < 0.5
    score = torch.randint(0, 3, (n,), generator=g).float()  # many ties
    return indices, wrong, score


@pytest.mark.parametrize("select", SELECT)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_choice_does_not_depend_on_the_order_of_the_indices(select, seed):
    indices, wrong, score = _scan(seed=seed)
    score = None if select in ("wrong", "random") else score
    expect = choose(select, indices, wrong, score, fraction=0.3, seed=seed)
    for p in range(3):
        perm = torch.randperm(len(indices), generator=torch.Generator().manual_seed(100 + p))
        got = choose(select, indices[perm], wrong[perm], None if score is None else score[perm], fraction=0.3, seed=seed)
        assert torch.equal(got, expect), (select, p)


def test_ties_go_to_the_lower_dataset_index():
    indices = torch.tensor([9, 3, 7, 1, 5])
    wrong = torch.tensor([True, True, False, False, False])
    score = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    assert choose("loss", indices, wrong, score, fraction=1.0, seed=0).tolist() == [1, 3]


def test_the_thesis_draw_does_not_depend_on_the_order_of_the_indices():
    indices = torch.arange(20, 50)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_thesis_subset(indices[perm], 0.3, 5), _thesis_subset(indices, 0.3, 5))


def test_budget_and_mismatched_lengths():
    assert [budget_size(None, wrong=n, scanned=20, fraction=0.2) for n in (0, 1, 2, 3, 12)] == [0, 1, 1, 1, 2]
    indices, wrong, score = _scan()
    with pytest.raises(ValueError, match=r"wrong has 39 entries but indices has 40; expected one per scanned index"):
        choose("wrong", indices, wrong[:-1], None, fraction=0.5, seed=0)
    with pytest.raises(ValueError, match=r"score has 39 entries but indices has 40; expected one per scanned index"):
        choose("loss", indices, wrong, score[:-1], fraction=0.5, seed=0)
    with pytest.raises(ValueError, match=r"select='loss' ranks by score; got score=None"):
        choose("loss", indices, wrong, None, fraction=0.5, seed=0)
