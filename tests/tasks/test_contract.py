"""Every task keeps the Task contract: declared options and data, train -> TaskResult, evaluate repeats its score."""
import pytest

from rnnbackends.tasks import TASKS, TaskResult, get_task
from rnnbackends.tasks.base import Task
from tests.cli.conftest import TINY

CLASSIC = ["sentiment", "timeseries", "tagging", "textgen", "translation"]


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_declares_the_contract(name):
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name and task.summary
    assert task.metric and isinstance(task.higher_is_better, bool) and task.baselines
    assert task.data.description and task.data.accepts and task.data.kind in ("file", "folder", "file or folder")
    assert task.data.default().exists(), f"{name}: the default data is not installed"
    for option in task.options:
        assert option.flag.startswith("--") and option.help


@pytest.mark.parametrize("name", CLASSIC)
def test_evaluate_repeats_the_score_of_train(name, tmp_path):
    make, file_name = TINY[name]
    data = make(tmp_path / file_name)
    task = get_task(name)
    result = task.train(data, backend="numpy", epochs=1, save=tmp_path / "run", progress=False)
    assert isinstance(result, TaskResult) and result.task == name and result.metric == task.metric
    assert set(result.baselines) == set(task.baselines)
    again = task.evaluate(tmp_path / "run", data, backend="numpy")
    assert again.value == pytest.approx(result.value, rel=1e-9)
    assert again.baselines == pytest.approx(result.baselines, rel=1e-9)


@pytest.mark.parametrize("name, options, message", [
    ("timeseries", {"season": "year"}, "--season: expected a whole number, got 'year'"),
    ("timeseries", {"season": 1}, "--season: must be at least 2, got 1"),
    ("sentiment", {"cv": 2.5}, "--cv: expected a whole number, got 2.5"),
    ("textgen", {"layers": 0}, "--layers: must be at least 1, got 0"),
    ("translation", {"cell": "tcn"}, "--cell must be one of rnn, gru, lstm, got 'tcn'"),
])
def test_check_options_applies_each_options_type_and_names_the_flag(name, options, message):
    with pytest.raises(ValueError) as error:
        get_task(name).check_options(options)
    assert str(error.value) == message


def test_check_options_converts_values_from_python_as_from_the_command_line():
    assert get_task("timeseries").check_options({"season": "12"})["season"] == 12
    assert get_task("sentiment").check_options({"cv": 10.0})["cv"] == 10
