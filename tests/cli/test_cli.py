"""The train and predict commands: bad input gives one clear error line and a non-zero exit, never a traceback."""
import json
import subprocess
import sys

import pytest

from rnnbackends.cli import main


@pytest.mark.parametrize("argv,message", [
    (["train", "nosuchtask"], "unknown task 'nosuchtask'; choose one of: sentiment, timeseries"),
    (["train", "sentiment", "--data", "/no/such/file.txt"], "--data /no/such/file.txt: no such file or folder"),
    (["train", "timeseries", "--epochs", "0"], "--epochs must be at least 1"),
    (["train", "timeseries", "--backend", "nosuchbackend"], "nosuchbackend"),
    (["train", "sentiment", "--metrics-out", "/no/such/dir/m.json"], "the folder /no/such/dir does not exist"),
])
def test_bad_arguments_are_one_error_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnnbackends: error: ") and message in err[0]


def test_wrong_file_formats(tmp_path, capsys):
    not_labelled = tmp_path / "plain.txt"
    not_labelled.write_text("a sentence without a label\n")
    not_a_series = tmp_path / "series.csv"
    not_a_series.write_text("date,value\n2000,12\n2001,twelve\n")
    short = tmp_path / "short.csv"
    short.write_text("date,value\n" + "".join(f"{i},{i}\n" for i in range(10)))
    for argv, message in ((["train", "sentiment", "--data", str(not_labelled)], "plain.txt:1: expected 'sentence<TAB>label'"),
                          (["train", "timeseries", "--data", str(not_a_series)], "series.csv:3: the value 'twelve' is not a number"),
                          (["train", "timeseries", "--data", str(short)], "too few"),
                          (["predict", "--checkpoint", str(tmp_path)], "not a checkpoint")):
        assert main(argv) == 2
        assert message in capsys.readouterr().err


def test_errors_from_the_console_script_have_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rnnbackends.cli", "train", "timeseries", "--data", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"rnnbackends: error: {tmp_path}: is a folder; give a CSV file with a header and rows 'date,value'"


def test_train_save_predict_metrics_and_plot(tmp_path, capsys):
    metrics, plot, save = tmp_path / "m.json", tmp_path / "p.png", tmp_path / "ckpt"
    assert main(["train", "timeseries", "--epochs", "3", "--quiet", "--save", str(save),
                 "--metrics-out", str(metrics), "--plot", str(plot), "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "test RMSE (one-step)" in out and "baseline seasonal naive" in out
    record = json.loads(metrics.read_text())
    assert set(record) == {"task", "backend", "metric", "value", "baseline", "higher_is_better"}
    assert record["task"] == "timeseries" and record["backend"] == "numpy" and record["higher_is_better"] is False
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = tmp_path / "history.txt"
    history.write_text(" ".join(str(v) for v in range(100, 160)) + "\n" + ",".join(str(v) for v in range(200, 260)) + "\n")
    assert main(["predict", "--checkpoint", str(save), str(history)]) == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == 2 and all(float(v) > 0 for v in lines)
    history.write_text("1 2 3\n")
    assert main(["predict", "--checkpoint", str(save), str(history)]) == 2
    assert "need at least" in capsys.readouterr().err
