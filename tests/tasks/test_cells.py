"""Every task takes --cell rnn|gru|lstm: a gated model trains, its checkpoint records the cell and predicts."""
import json

import pytest

from rnnbackends import checkpoint
from rnnbackends.cli import main
from rnnbackends.tasks import TASKS, get_task
from rnnbackends.tasks.base import CELL


@pytest.mark.parametrize("name", TASKS)
def test_every_task_offers_the_cell_option(name):
    options = {option.name: option for option in get_task(name).options}
    assert options["cell"].choices == CELL.choices
    assert options["cell"].default == ("gru" if name == "translation" else "rnn")   # measurably better there


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_timeseries_trains_saves_and_predicts(tmp_path, capsys, cell):
    save, metrics = tmp_path / "run", tmp_path / "m.json"
    assert main(["train", "timeseries", "--cell", cell, "--epochs", "2", "--quiet", "--save", str(save),
                 "--metrics-out", str(metrics)]) == 0
    models, meta = checkpoint.load(save)
    assert all(m.config["cell"] == cell for m in models) and all(m.rnn.cell == cell for m in models)
    assert json.loads(metrics.read_text())["task"] == "timeseries"
    history = tmp_path / "history.txt"
    history.write_text(" ".join(str(v) for v in range(100, 160)) + "\n")
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(save), str(history)]) == 0
    assert float(capsys.readouterr().out.split()[0]) > 0


def test_unknown_cell_is_one_error_line(capsys):
    assert main(["train", "sentiment", "--cell", "transformer"]) == 2
    want = "rnnbackends: error: --cell must be one of rnn, gru, lstm, got 'transformer'"
    assert capsys.readouterr().err.strip() == want
