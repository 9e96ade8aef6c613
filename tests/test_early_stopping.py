"""Early stopping on scripted metric sequences; the expected decisions are worked out by hand."""

from __future__ import annotations

import json
import math

import pytest

from grpolab.eval.early_stopping import EarlyStopping


def run(es: EarlyStopping, values: list[float], every: int = 10) -> list[tuple[bool, bool]]:
    return [(d.improved, d.should_stop) for d in (es.update(v, i * every) for i, v in enumerate(values))]


def test_stops_after_patience_bad_evals() -> None:
    es = EarlyStopping("eval/accuracy", patience=3)
    got = run(es, [0.1, 0.2, 0.2, 0.15, 0.18])
    assert got == [
        (True, False),  # step 0: the baseline always sets best = 0.1
        (True, False),  # step 10: 0.2 > 0.1 -> best 0.2, counter 0
        (False, False),  # step 20: 0.2 is not > 0.2 -> bad 1/3
        (False, False),  # step 30: 0.15 -> bad 2/3
        (False, True),  # step 40: 0.18 -> bad 3/3 -> stop
    ]
    assert (es.best, es.best_step, es.bad_evals) == (0.2, 10, 3)


def test_improvement_resets_the_counter() -> None:
    es = EarlyStopping("eval/accuracy", patience=2)
    got = run(es, [0.5, 0.4, 0.6, 0.6, 0.5])
    # 0.5 best; 0.4 bad 1/2; 0.6 best (counter back to 0); 0.6 bad 1/2; 0.5 bad 2/2 -> stop.
    assert got == [(True, False), (False, False), (True, False), (False, False), (False, True)]
    assert es.best_step == 20


def test_min_delta_ignores_small_gains() -> None:
    es = EarlyStopping("eval/accuracy", patience=2, min_delta=0.05)
    got = run(es, [0.50, 0.54, 0.56, 0.60])
    # 0.50 best. 0.54: 0.54 > 0.55? no -> bad 1/2 (best stays 0.50).
    # 0.56: 0.56 > 0.55 -> best 0.56. 0.60: 0.60 > 0.61? no -> bad 1/2.
    assert got == [(True, False), (False, False), (True, False), (False, False)]
    assert es.best == 0.56


def test_small_gains_do_not_keep_the_run_alive() -> None:
    es = EarlyStopping("eval/accuracy", patience=3, min_delta=0.05)
    # Each value is 0.02 above the last, but never more than 0.05 above best = 0.30.
    got = run(es, [0.30, 0.32, 0.34, 0.34])
    assert got[-1] == (False, True)
    assert es.best == 0.30


def test_patience_zero_never_stops() -> None:
    es = EarlyStopping("eval/accuracy", patience=0)
    got = run(es, [0.9] + [0.1] * 50)
    assert not any(stop for _, stop in got)
    assert es.best == 0.9 and es.bad_evals == 50


def test_nan_is_never_an_improvement() -> None:
    es = EarlyStopping("eval/accuracy", patience=2)
    assert run(es, [math.nan, 0.1, math.nan, math.nan]) == [
        (False, False),  # no best yet, but NaN cannot become best
        (True, False),
        (False, False),
        (False, True),
    ]


def test_reason_says_why_it_stopped() -> None:
    es = EarlyStopping("eval/accuracy", patience=1)
    es.update(0.5, 0)
    decision = es.update(0.4, 30)
    assert decision.should_stop
    assert "eval/accuracy" in decision.reason and "patience 1" in decision.reason
    assert "0.5 at step 0" in decision.reason


def test_state_round_trip_through_json_continues_identically() -> None:
    values = [0.2, 0.3, 0.25, 0.28, 0.31, 0.3, 0.29]
    whole = EarlyStopping("eval/accuracy", patience=3, min_delta=0.02)
    expected = run(whole, values)

    first = EarlyStopping("eval/accuracy", patience=3, min_delta=0.02)
    head = run(first, values[:4])
    state = json.loads(json.dumps(first.state_dict()))  # it must survive trainer_state.json
    resumed = EarlyStopping("eval/accuracy", patience=3, min_delta=0.02)
    resumed.load_state_dict(state)
    tail = [(d.improved, d.should_stop) for d in (resumed.update(v, 0) for v in values[4:])]
    assert head + tail == expected
    assert resumed.best == whole.best and resumed.bad_evals == whole.bad_evals


def test_state_for_another_metric_is_rejected() -> None:
    es = EarlyStopping("eval/accuracy", patience=3)
    with pytest.raises(ValueError, match="eval/format"):
        es.load_state_dict(EarlyStopping("eval/format", patience=3).state_dict())


@pytest.mark.parametrize("kwargs", [{"patience": -1}, {"patience": 1, "min_delta": -0.1}])
def test_invalid_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EarlyStopping("eval/accuracy", **kwargs)  # type: ignore[arg-type]
