"""--resume for the ensemble tasks: an interrupted run, resumed, repeats the uninterrupted one member for member."""
import numpy as np
import pytest

from rnnbackends import checkpoint
from rnnbackends.tasks import sentiment, timeseries
from tests.cli.conftest import tiny_sentiment, tiny_series


def interrupt_at_call(monkeypatch, module, name, call):
    """Make ``module.name`` raise KeyboardInterrupt on its ``call``-th call (1-based)."""
    original, calls = getattr(module, name), [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)
    monkeypatch.setattr(module, name, wrapped)


@pytest.mark.parametrize("module,make,name,call", [
    (sentiment, tiny_sentiment, "batches_of", 8),          # 3 epochs per member: member 3, epoch 2
    (timeseries, tiny_series, "minibatches", 6),           # member 2, epoch 3
])
def test_an_interrupted_ensemble_resumes_where_it_stopped(module, make, name, call, tmp_path, monkeypatch):
    data = make(tmp_path / "data")
    task = module.TASK
    settings = dict(backend="numpy", epochs=3, seed=2, progress=False)
    whole = task.train(data, save=tmp_path / "whole", **settings)
    with monkeypatch.context() as patch:
        interrupt_at_call(patch, module, name, call)
        with pytest.raises(KeyboardInterrupt):
            task.train(data, save=tmp_path / "cut", **settings)
    members = sorted(p.name for p in (tmp_path / "cut").glob("member-*"))
    assert members and not (tmp_path / "cut" / "checkpoint.json").is_file()
    resumed = task.train(data, save=tmp_path / "cut", resume=True, **settings)
    assert len(resumed.histories) == len(whole.histories) == 5
    for got, want in zip(resumed.histories, whole.histories):
        assert [r["loss"] for r in got] == [r["loss"] for r in want]
        assert [r["val_loss"] for r in got] == [r["val_loss"] for r in want]
    assert resumed.value == whole.value
    whole_weights, resumed_weights = checkpoint.read(tmp_path / "whole")[1], checkpoint.read(tmp_path / "cut")[1]
    assert whole_weights.keys() == resumed_weights.keys()
    for key in whole_weights:
        np.testing.assert_array_equal(resumed_weights[key], whole_weights[key], err_msg=key)


def test_resume_of_a_finished_run_trains_nothing_more(tmp_path):
    data = tiny_series(tmp_path / "s.csv")
    first = timeseries.TASK.train(data, backend="numpy", epochs=2, save=tmp_path / "run", progress=False)
    again = timeseries.TASK.train(data, backend="numpy", epochs=2, save=tmp_path / "run", progress=False, resume=True)
    assert again.histories == first.histories and again.value == first.value
