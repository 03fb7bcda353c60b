"""Long horizons: on long made-up series the multi-step forecast stays within the better naive multi-step forecast,
while the one-step forecast beats both naive ones."""
import pytest

from rnnbackends.tasks import timeseries
from tests.tasks.long_series import daily_season, monthly_cycle


@pytest.mark.slow
@pytest.mark.parametrize("make,season,test_steps", [(monthly_cycle, 132, 300), (daily_season, 365, 365)],
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


@pytest.mark.parametrize("recursion,expected_phi", [("runaway", "below 1"), ("close", 1.0)])
def test_a_runaway_recursion_is_shrunk_toward_the_better_naive_forecast(recursion, expected_phi, monkeypatch):
    np = timeseries.np
    t = np.arange(240)
    values = 50 + 10 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(0).normal(0, 1, 240)
    first, last = 200, 240
    truth = values[first:last]
    forecast = truth + 40 * np.arange(1, 41) / 40 if recursion == "runaway" else truth + 0.1
    monkeypatch.setattr(timeseries, "multi_step", lambda *args: forecast)
    reference, phi = timeseries.choose_damping(None, None, None, values, 12, first, last)
    assert reference == "seasonal naive"
    if expected_phi == 1.0:
        assert phi == 1.0
    else:
        naive = timeseries.baselines(values, 12, first, last)["seasonal naive multi-step"]
        damped = timeseries.damped(forecast, naive, phi)
        assert phi < 1 and timeseries.rmse_mae(damped, truth)[0] <= timeseries.rmse_mae(naive, truth)[0]
