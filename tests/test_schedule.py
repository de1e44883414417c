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
    # cooldown skips 6; stale again at 6, 7 -> fires at 7
    assert fired == [2, 5, 7]
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
