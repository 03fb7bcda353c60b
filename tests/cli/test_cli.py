"""The CLI end to end: train/save/predict, what --save may overwrite, checks before any work, Ctrl-C, --resume
checks, strict metrics JSON, plot title, generation without special tokens, the help text, the compile notice."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from rnnbackends import checkpoint
from rnnbackends.cli import common, main
from rnnbackends.cli import train as train_command
from rnnbackends.plotting import plot_title
from rnnbackends.tasks import get_task, textgen, timeseries
from rnnbackends.tasks.base import Data
from tests.cli.conftest import tiny_series, tiny_text


def error_line(capsys):
    """The one error line the CLI printed (and nothing else on standard error)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnnbackends: error: "), err
    return err[0]


def test_errors_from_the_console_script_have_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rnnbackends.cli", "train", "timeseries", "--data", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"rnnbackends: error: --data {tmp_path}: is a folder; give a CSV file with a "
                                     "header and rows 'date,value'")


def test_train_save_predict_evaluate_metrics_and_plot(tmp_path, capsys, tiny_data):
    metrics, plot, save = tmp_path / "m.json", tmp_path / "p.png", tmp_path / "ckpt"
    assert main(["train", "timeseries", "--epochs", "3", "--quiet", "--save", str(save), "--data",
                 str(tiny_data["timeseries"]), "--metrics-out", str(metrics), "--plot", str(plot),
                 "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "test RMSE (one-step)" in out and "baseline seasonal naive" in out
    record = json.loads(metrics.read_text())
    assert set(record) == {"task", "backend", "metric", "value", "baseline", "higher_is_better", "seconds",
                           "details"}
    assert record["seconds"] > 0 and isinstance(record["details"], dict)
    assert record["task"] == "timeseries" and record["backend"] == "numpy" and record["higher_is_better"] is False
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = tmp_path / "history.txt"
    history.write_text(" ".join(str(v) for v in range(100, 160)) + "\n" + ",".join(str(v) for v in range(200,
                                                                                                         260)) + "\n")
    assert main(["predict", "--checkpoint", str(save), str(history)]) == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == 2 and all(float(v) > 0 for v in lines)
    assert main(["evaluate", "--checkpoint", str(save), "--data", str(tiny_data["timeseries"])]) == 0
    assert f"test RMSE (one-step) {record['value']:.4f}" in capsys.readouterr().out


def test_save_refuses_folders_it_did_not_write_unless_forced(tmp_path, capsys, tiny_data):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "checkpoint.json").write_text("{}")
    (folder / "weights-final.npz").write_bytes(b"someone else's")
    argv = ["train", "timeseries", "--epochs", "1", "--quiet", "--data", str(tiny_data["timeseries"]),
            "--backend", "numpy", "--save", str(folder)]
    assert main(argv) == 2
    assert "holds files that are not an rnnbackends checkpoint" in error_line(capsys)
    assert (folder / "weights-final.npz").read_bytes() == b"someone else's"
    assert json.loads((folder / "checkpoint.json").read_text()) == {}
    (folder / "weights-final.npz").unlink()
    (folder / "notes.txt").write_text("mine")
    assert main(argv + ["--force"]) == 0
    assert (folder / "notes.txt").read_text() == "mine"
    assert checkpoint.read(folder)[0]["meta"]["task"] == "timeseries"
    assert main(argv[:-2] + ["--save", str(folder / "member-0")]) == 0            # its own checkpoint: fine
    capsys.readouterr()


def test_another_tasks_checkpoint_is_not_replaced_without_force(tmp_path, capsys, checkpoints, tiny_data):
    folder = tmp_path / "translation"
    shutil.copytree(checkpoints["translation"], folder)
    before = (folder / "checkpoint.json").read_bytes()
    argv = ["train", "textgen", "--epochs", "1", "--quiet", "--data", str(tiny_data["textgen"]), "--backend", "numpy",
            "--save", str(folder)]
    assert main(argv) == 2
    assert "holds a translation checkpoint, not a textgen one" in error_line(capsys)
    assert (folder / "checkpoint.json").read_bytes() == before
    assert main(argv + ["--force"]) == 0
    assert checkpoint.read(folder)[0]["meta"]["task"] == "textgen"


@pytest.mark.parametrize("extra,message", [
    (["--metrics-out", "{tmp}"], "--metrics-out {tmp}: is a folder"),
    (["--save", "{tmp}/file.txt"], "--save {tmp}/file.txt: is a file"),
    (["--plot", "{tmp}/p.png"], "--plot needs matplotlib"),
    (["--data", ""], "--data: must not be empty"),
])
def test_arguments_are_checked_before_any_work(extra, message, tmp_path, capsys, monkeypatch):
    (tmp_path / "file.txt").write_text("x")
    task = get_task("sentiment")
    monkeypatch.setattr(type(task), "train", lambda *a, **k: pytest.fail("trained before checking the arguments"))
    real_find_spec = train_command.importlib.util.find_spec
    monkeypatch.setattr(train_command.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    assert main(["train", "sentiment"] + [arg.format(tmp=tmp_path) for arg in extra]) == 2
    assert message.format(tmp=tmp_path) in error_line(capsys)


@pytest.mark.parametrize("option", ["--data", "--save", "--metrics-out", "--plot"])
def test_empty_strings_are_errors_not_defaults(option, capsys):
    assert main(["train", "timeseries", option, ""]) == 2
    assert f"{option}: must not be empty" in error_line(capsys)


def test_ctrl_c_suggests_resume_only_with_a_saved_run(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(type(get_task("sentiment")), "train", interrupted)
    assert main(["train", "sentiment", "--save", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert "with --resume continues from the last finished epoch" in err and str(tmp_path / "run") in err
    assert main(["train", "sentiment"]) == 130
    assert "nothing was saved (train with --save DIR to be able to --resume)" in capsys.readouterr().err


def test_resume_refuses_other_data_with_the_same_vocabulary(tmp_path, capsys):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    tiny_text(first)
    second.write_text("".join(reversed(first.read_text())), encoding="utf-8")      # same characters, other text
    save = tmp_path / "run"
    assert main(["train", "textgen", "--data", str(first), "--epochs", "1", "--quiet", "--save", str(save),
                 "--backend", "numpy"]) == 0
    capsys.readouterr()
    assert main(["train", "textgen", "--data", str(second), "--epochs", "2", "--quiet", "--save", str(save),
                 "--resume", "--backend", "numpy"]) == 2
    assert "--resume: the data, vocabulary, seed or options differ from the run saved in" in error_line(capsys)
    assert main(["train", "textgen", "--data", str(first), "--epochs", "2", "--quiet", "--save", str(save),
                 "--resume", "--seed", "3", "--backend", "numpy"]) == 2
    assert "differ from the run saved" in error_line(capsys)
    assert main(["train", "textgen", "--data", str(first), "--epochs", "2", "--quiet", "--save", str(save),
                 "--resume", "--backend", "numpy"]) == 0
    assert checkpoint.read(save / "last")[0]["meta"]["training"]["epoch"] == 2


def test_a_series_that_turns_negative_in_its_test_part_gives_finite_scores_and_strict_json(tmp_path, capsys):
    path = tiny_series(tmp_path / "s.csv", n=80)
    lines = path.read_text().splitlines()
    lines[-3] = lines[-3].split(",")[0] + ",-5"                                   # only in the test part
    path.write_text("\n".join(lines) + "\n")
    metrics = tmp_path / "m.json"
    assert main(["train", "timeseries", "--data", str(path), "--epochs", "2", "--quiet", "--backend", "numpy",
                 "--metrics-out", str(metrics)]) == 0
    record = json.loads(metrics.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the metrics JSON"))
    assert np.isfinite(record["value"]) and np.isfinite(record["baseline"])
    assert "nan" not in capsys.readouterr().out.lower()


def test_non_finite_metrics_are_written_as_null(tmp_path):
    train_command.write_metrics(tmp_path / "m.json", {"value": float("nan"), "baseline": float("inf"), "task": "t"})
    assert json.loads((tmp_path / "m.json").read_text()) == {"value": None, "baseline": None, "task": "t"}


def test_did_you_mean_is_case_insensitive_for_the_environment_variable(capsys, monkeypatch):
    monkeypatch.setenv("RNNBACKENDS_BACKEND", "NUMBA")
    assert main(["train", "timeseries", "--epochs", "1"]) == 2
    assert "did you mean 'numba'?" in error_line(capsys)


def test_the_time_series_plot_says_test_rmse_once(tiny_data):
    result = timeseries.TASK.train(tiny_data["timeseries"], backend="numpy", epochs=1, progress=False)
    title = plot_title(result)
    assert title.count("test") == 1 and "test RMSE (one-step)" in title


def test_generate_never_prints_padding_or_unknown(tmp_path, capsys, checkpoints):
    folder = tmp_path / "lm"
    shutil.copytree(checkpoints["textgen"], folder)
    models, meta = checkpoint.load(folder, "numpy")
    bias = models[0].params["output.b"] if "output.b" in models[0].params else None
    name = next(k for k in models[0].params if k.startswith("output.") and models[0].params[k].ndim == 1)
    bias = models[0].state_dict()[name]
    bias[:2] = 100.0                                            # <pad> = 0 and <unk> = 1 far above every other token
    models[0].load_state_dict({**models[0].state_dict(), name: bias})
    checkpoint.save(folder, models, meta)
    for temperature in ("0", "1"):
        assert main(["generate", "--checkpoint", str(folder), "--length", "40", "--temperature", temperature,
                     "--seed", "1", "--prime", "ROMEO: \u2603"]) == 0
        out = capsys.readouterr().out
        assert "<pad>" not in out and "<unk>" not in out and len(out.rstrip("\n")) == len("ROMEO: \u2603") + 40
    assert textgen.generate_text(models[0], textgen.Vocabulary(meta["vocabulary"]), "char", "a", 5, 0).count("<") == 0


def test_help_claims_bundled_data_only_when_it_is_installed(monkeypatch, capsys):
    task = get_task("tagging")
    assert main(["train", "--help"]) == 0
    assert "UD English-EWT: a 2,065-sentence train subset, dev and test (bundled)" in capsys.readouterr().out
    monkeypatch.setattr(type(task), "data", Data(task.data.description, task.data.accepts,
                                                 lambda: common.Path("/no/such"),
                                                  "folder"))
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "dev and test (NOT installed: give --data)" in out and "dev and test (bundled)" not in out


def test_compile_notice_once_before_numba_compiles(monkeypatch, capsys):
    monkeypatch.setattr(common, "numba_cache_is_cold", lambda: True)
    common.announce_compilation("numba")
    common.announce_compilation("numpy")
    assert capsys.readouterr().err == "rnnbackends: compiling kernels (first run only)\n"
    monkeypatch.setattr(common, "numba_cache_is_cold", lambda: False)
    common.announce_compilation("numba")
    assert capsys.readouterr().err == ""


def test_task_metrics_script_gives_one_line_not_a_traceback(tmp_path):
    (tmp_path / "out").write_text("a file")
    for extra in (["--out", str(tmp_path / "out")], ["--table-only", "--out", str(tmp_path), "--page", "/no/page.md"]):
        result = subprocess.run([sys.executable, "scripts/task_metrics.py", *extra], capture_output=True, text=True)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("task_metrics: error: ")


def test_the_numba_cache_is_cold_until_kernels_are_cached(tmp_path, monkeypatch):
    from types import SimpleNamespace
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(common.importlib.util, "find_spec",
                        lambda name: SimpleNamespace(submodule_search_locations=[str(tmp_path / "plugin")]))
    (tmp_path / "plugin" / "__pycache__").mkdir(parents=True)
    assert common.numba_cache_is_cold()
    (tmp_path / "plugin" / "__pycache__" / "kernels.step-12.py311.nbi").write_bytes(b"")
    assert not common.numba_cache_is_cold()


def test_ctrl_c_then_resume_finishes_an_ensemble_from_the_cli(tmp_path, capsys, monkeypatch, tiny_data):
    from rnnbackends.tasks import sentiment
    from tests.tasks.test_resume import interrupt_at_call
    argv = ["train", "sentiment", "--data", str(tiny_data["sentiment"]), "--epochs", "2", "--quiet", "--backend",
            "numpy", "--save", str(tmp_path / "run")]
    with monkeypatch.context() as patch:
        interrupt_at_call(patch, sentiment, "batches_of", 4)                 # member 2, epoch 2
        assert main(argv) == 130
    assert "--resume" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    assert "sentiment on backend numpy" in capsys.readouterr().out
    assert len(checkpoint.read(tmp_path / "run")[0]["models"]) == 5
