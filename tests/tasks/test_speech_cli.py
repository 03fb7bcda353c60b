"""The speech task from the command line: make a corpus, train on it, predict WAV files (paths or stdin), errors."""
import io
import json

import pytest

from rnnbackends.cli import main
from rnnbackends.speech.corpus import WORDS
from rnnbackends.tasks import speech
from tests.tasks.test_speech import write_tiny_corpus


@pytest.fixture
def small_model(monkeypatch):
    """A recogniser and baseline small enough to train in seconds."""
    monkeypatch.setitem(speech.HYPERPARAMETERS, "hidden_size", 8)
    monkeypatch.setitem(speech.HYPERPARAMETERS, "num_layers", 1)
    monkeypatch.setitem(speech.BASELINE, "hidden_size", 8)
    monkeypatch.setitem(speech.BASELINE, "epochs", 1)


def test_make_train_predict(tmp_path, small_model, capsys, monkeypatch):
    pytest.importorskip("espeakng_loader", reason="making a corpus needs pip install 'rnnbackends[speech]'")
    corpus, run = tmp_path / "digits", tmp_path / "run"
    assert main(["data", "make", "speech", "--out", str(corpus), "--size", "20", "--rate", "16000"]) == 0
    assert "test: 2 utterances" in capsys.readouterr().out
    assert main(["train", "speech", "--data", str(corpus), "--epochs", "1", "--save", str(run), "--quiet", "--backend",
                 "numpy", "--metrics-out", str(tmp_path / "m.json"), "--plot", str(tmp_path / "p.png")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["task"] == "speech" and metrics["metric"] == "test WER" and not metrics["higher_is_better"]
    assert (tmp_path / "p.png").stat().st_size > 10_000
    wavs = sorted(str(p) for p in (corpus / "test").glob("*.wav"))
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run), "--backend", "numpy", *wavs]) == 0
    by_paths = capsys.readouterr().out.splitlines()
    assert len(by_paths) == len(wavs) and all(set(t.split()) <= set(WORDS) for t in by_paths)
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(wavs) + "\n"))
    assert main(["predict", "--checkpoint", str(run), "--backend", "numpy", "-"]) == 0
    assert capsys.readouterr().out.splitlines() == by_paths


def test_bad_input_is_one_line_and_exit_2(tmp_path, small_model, capsys):
    write_tiny_corpus(tmp_path / "corpus", ["yes", "no", "yes no"] * 2)
    (tmp_path / "empty").mkdir()
    assert main(["train", "speech", "--data", str(tmp_path / "empty")]) == 2
    assert "no transcripts.tsv" in capsys.readouterr().err
    assert main(["train", "speech", "--data", str(tmp_path / "corpus"), "--epochs", "1", "--save",
                 str(tmp_path / "run"), "--quiet", "--backend", "numpy"]) == 0
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(tmp_path / "run"), str(tmp_path / "missing.wav")]) == 2
    err = capsys.readouterr().err
    assert "missing.wav: no such audio file" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "text.wav").write_text("hello")
    assert main(["predict", "--checkpoint", str(tmp_path / "run"), str(tmp_path / "text.wav")]) == 2
    assert "text.wav" in capsys.readouterr().err
    assert main(["data", "make", "speech", "--out", str(tmp_path / "x"), "--size", "0"]) == 2

