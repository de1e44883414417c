import pytest

from proxyaug import ProxySchedule


@pytest.mark.parametrize("spec", ["5,p,9,p,9,p,4", "[5, 'p', 9, 'p', 9, 'p', 4]", [5, "p", 9, "p", 9, "P", 4]])
def test_thesis_notation(spec):
    s = ProxySchedule.parse(spec)
    assert s.epochs == 30 and s.refresh_epochs == (5, 15, 25)
    assert [e for e in range(40) if s.should_refresh(e)] == [5, 15, 25]


def test_leading_and_repeated_p():
    s = ProxySchedule.parse("p,p,3")
    assert s.refresh_epochs == (0, 1) and s.epochs == 5


@pytest.mark.parametrize(
    "spec, match",
    [
        ("5,q,4", r"spec element 1 is 'q'; expected a positive number of epochs or 'p'"),
        ("5,0,p", r"spec element 1 is '0'"),
        ([5, 2.5, "p"], r"spec element 1 is 2.5"),
        ("", r"is empty"),
        ("5,-2,p", r"spec element 1 is '-2'"),
    ],
)
def test_malformed(spec, match):
    with pytest.raises(ValueError, match=match):
        ProxySchedule.parse(spec)
    with pytest.raises(TypeError, match="spec must be a string"):
        ProxySchedule.parse(5)


def test_every():
    s = ProxySchedule.every(2)
    assert [e for e in range(7) if s.should_refresh(e)] == [1, 3, 5]
    bounded = ProxySchedule.every(2, epochs=6)
    assert [e for e in range(6) if bounded.should_refresh(e)] == [1, 3]  # none after the last epoch
    with pytest.raises(ValueError, match=r"n=0 is not valid"):
        ProxySchedule.every(0)
    with pytest.raises(ValueError, match=r"epoch=-1 is not valid"):
        s.should_refresh(-1)


def test_on_plateau_patience_cooldown_warmup_and_state():
    s = ProxySchedule.on_plateau(patience=2, cooldown=1, warmup=1)
    accs = [0.5, 0.5, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    fired = [e for e, a in enumerate(accs) if s.should_refresh(e, metric=a)]
    # no improvement at epochs 1 and 2 -> fires after epoch 2; then 0.6 improves; stale at 4, 5 -> fires at 5;
    # epoch 6 is the cooldown and does not count (as in ReduceLROnPlateau); stale at 7, 8 -> fires at 8
    assert fired == [2, 5, 8]
    state = s.state_dict()
    t = ProxySchedule.on_plateau(patience=2, cooldown=1, warmup=1)
    t.load_state_dict(state)
    assert t.state_dict() == state and t.should_refresh(9, metric=0.6) == s.should_refresh(9, metric=0.6)


def test_on_plateau_min_mode_and_errors():
    s = ProxySchedule.on_plateau(patience=1, mode="min", max_refreshes=1)
    assert [s.should_refresh(e, metric=v) for e, v in enumerate([1.0, 0.9, 0.95, 0.97])] == [False, False, True, False]
    with pytest.raises(ValueError, match=r"needs a finite number each epoch"):
        s.should_refresh(5)
    with pytest.raises(ValueError, match=r"mode='up' is not supported"):
        ProxySchedule.on_plateau(mode="up")


def test_on_plateau_repr_names_every_setting():
    s = ProxySchedule.on_plateau(patience=3, mode="min", min_delta=0.01, cooldown=1, warmup=2, max_refreshes=4)
    assert repr(s) == "PlateauSchedule(patience=3, mode='min', min_delta=0.01, cooldown=1, warmup=2, max_refreshes=4)"
    assert repr(ProxySchedule.on_plateau()).endswith("cooldown=0, warmup=0, max_refreshes=None)")


# -- on_plateau against torch's ReduceLROnPlateau ----------------------------------------------------
def _reductions(metrics, patience, cooldown, mode, min_delta):
    """Epochs after which ReduceLROnPlateau lowers the LR (its patience counts epochs *beyond* ours)."""
    import torch

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode=mode, factor=0.9, patience=patience - 1, threshold=min_delta, threshold_mode="abs", cooldown=cooldown, eps=0.0
    )
    fired = []
    for epoch, m in enumerate(metrics):
        before = opt.param_groups[0]["lr"]
        sched.step(m)
        if opt.param_groups[0]["lr"] < before:
            fired.append(epoch)
    return fired


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("patience", [1, 2, 3])
@pytest.mark.parametrize("cooldown", [0, 1, 3])
@pytest.mark.parametrize("min_delta", [0.0, 0.05])
def test_on_plateau_fires_when_reduce_lr_on_plateau_reduces(mode, patience, cooldown, min_delta):
    import torch

    g = torch.Generator().manual_seed(patience * 10 + cooldown)
    for _ in range(5):
        # a noisy, slowly improving curve with plateaus and exact ties (rounded)
        metrics = ((torch.rand(40, generator=g) * 0.2 + torch.linspace(0, 0.5, 40)) * 20).round().div(20).tolist()
        s = ProxySchedule.on_plateau(patience=patience, cooldown=cooldown, mode=mode, min_delta=min_delta)
        fired = [e for e, m in enumerate(metrics) if s.should_refresh(e, metric=m)]
        assert fired == _reductions(metrics, patience, cooldown, mode, min_delta), metrics


def test_on_plateau_ignores_bad_epochs_during_cooldown():
    s = ProxySchedule.on_plateau(patience=2, cooldown=2)
    # fires after epoch 2; epochs 3 and 4 are the cooldown and do not count; stale at 5, 6 -> fires at 6
    assert [e for e, a in enumerate([0.5] * 9) if s.should_refresh(e, metric=a)] == [2, 6]


def test_on_plateau_takes_0d_tensors_and_numpy_scalars():
    np = pytest.importorskip("numpy")
    import torch

    values = [torch.tensor(0.5), np.float32(0.6), np.array(0.6), torch.tensor(0.6, dtype=torch.float64), 0.6]
    s, t = ProxySchedule.on_plateau(patience=2), ProxySchedule.on_plateau(patience=2)
    assert [s.should_refresh(e, metric=v) for e, v in enumerate(values)] == [t.should_refresh(e, metric=float(v)) for e, v in enumerate(values)]
    assert type(s.state_dict()["best"]) is float


@pytest.mark.parametrize(
    "metric",
    [float("inf"), float("-inf"), float("nan"), "0.5", True, [0.5], None],
    ids=["inf", "-inf", "nan", "str", "bool", "list", "none"],
)
def test_on_plateau_refuses_what_is_not_a_finite_number(metric):
    s = ProxySchedule.on_plateau()
    with pytest.raises(ValueError, match=r"metric=.* is not valid; an on_plateau schedule needs a finite number each epoch"):
        s.should_refresh(0, metric=metric)


def test_on_plateau_refuses_tensors_of_more_than_one_value():
    import torch

    s = ProxySchedule.on_plateau()
    for bad in (torch.tensor([0.5, 0.6]), torch.tensor([0.5]), torch.tensor(float("inf")), torch.tensor(True)):
        with pytest.raises(ValueError, match=r"metric=.* is not valid; an on_plateau schedule needs a finite number each epoch"):
            s.should_refresh(0, metric=bad)
    assert s.state_dict()["best"] is None  # nothing was recorded
