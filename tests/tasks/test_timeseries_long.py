"""Long horizons: on long made-up series the multi-step forecast stays within the better naive multi-step forecast,
while the one-step forecast beats both naive ones.

Measured (numba, seed 0): monthly 11-year cycle, 300 test steps: one-step RMSE 6.72 (persistence 6.79, seasonal
naive 20.39); multi-step 23.66 (persistence 34.27, seasonal naive 23.79; undamped recursion 63.6). Daily yearly
season, 730 test steps (two seasons, the task's rule for m = 365): one-step 2.07 (2.17, 3.95); multi-step 3.95
(7.71, 4.05; undamped 7.58). About 4 minutes per series on an idle 2-core machine.
"""
import pytest

from rnnbackends.tasks import timeseries
from tests.tasks.long_series import daily_season, monthly_cycle


@pytest.mark.slow
@pytest.mark.parametrize("make,season,test_steps", [(monthly_cycle, 132, 300), (daily_season, 365, 730)],
                         ids=["monthly-11-year-cycle", "daily-yearly-season"])
def test_multi_step_stays_sane_over_long_horizons(make, season, test_steps, tmp_path):
    result = timeseries.TASK.train(make(tmp_path / "series.csv"), season=season, progress=False)
    scores = result.details["scores (RMSE, MAE)"]
    assert result.details["test"] == test_steps and result.details["season"] == season
    assert scores["RNN"][0] < min(scores["persistence"][0], scores["seasonal naive"][0]), scores
    naive = min(scores["persistence multi-step"][0], scores["seasonal naive multi-step"][0])
    assert scores["RNN multi-step"][0] <= naive, scores


def test_damping_is_chosen_on_validation_and_keeps_a_recursion_that_wins():
    truth = timeseries.np.linspace(100, 130, 40)
    good = truth + 1.0
    naive = timeseries.np.full(40, 100.0)
    assert timeseries.damped(good, naive, 1.0).tolist() == good.tolist()
    assert timeseries.damped(good, naive, 0.0)[0] == good[0] and (timeseries.damped(good, naive, 0.0)[1:] == 100).all()
    assert abs(timeseries.damped(good, naive, 0.5)[2] - (100 + 0.25 * (good[2] - 100))) < 1e-12


@pytest.mark.parametrize("recursion", ["runaway", "close"])
def test_a_runaway_recursion_is_shrunk_toward_the_better_naive_forecast(recursion, monkeypatch):
    np = timeseries.np
    t = np.arange(240)
    values = 50 + 0.05 * t + 10 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(0).normal(0, 1, 240)
    first, last = 200, 240

    def recursion_from(models, scaler, window, histories, steps):
        """The true continuation of each history, plus a drift that grows with the horizon when it runs away."""
        origins = [int(np.flatnonzero(values == row[-1])[0]) + 1 for row in histories]
        truth = np.stack([values[o:o + steps] for o in origins])
        return truth + (3.0 * np.arange(steps) if recursion == "runaway" else 0.1)

    monkeypatch.setattr(timeseries, "multi_step", recursion_from)
    reference, phi = timeseries.choose_damping(None, None, 5, values, 12, first, last)
    assert reference == "seasonal naive"
    if recursion == "close":
        assert phi == 1.0
    else:
        truth = values[first:last]
        naive = timeseries.baselines(values, 12, first, last)["seasonal naive multi-step"]
        shrunk = timeseries.damped(recursion_from(None, None, 5, values[None, :first], last - first)[0], naive, phi)
        assert phi < 1 and timeseries.rmse_mae(shrunk, truth)[0] < timeseries.rmse_mae(naive, truth)[0]


def test_multi_step_from_several_histories_at_once_matches_one_at_a_time():
    np = timeseries.np
    from rnnbackends.models import Forecaster
    models = [Forecaster(1, hidden_size=4, backend="numpy", seed=s) for s in range(2)]
    scaler = timeseries.Scaler(True, 0.01, 0.1, 3.0)
    histories = 100 + np.random.default_rng(1).random((3, 12)) * 10
    together = timeseries.multi_step(models, scaler, 7, histories, 5)
    for row, forecast in zip(histories, together):
        np.testing.assert_allclose(timeseries.multi_step(models, scaler, 7, row, 5), forecast, rtol=1e-6)  # float32
