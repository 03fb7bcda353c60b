"""Small checkpoints of every task, trained once per session on tiny data (numpy backend), for the CLI tests."""
import numpy as np
import pytest

from rnnbackends.datasets import default_data, read_text
from rnnbackends.tasks import get_task

WORDS = ["good", "great", "tasty", "cheap", "bad", "awful", "cold", "slow", "food", "service", "the", "was"]


def tiny_sentiment(path):
    """40 labelled sentences."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(40):
        label = i % 2
        words = list(rng.choice(WORDS[8:], 2)) + [WORDS[rng.integers(0, 4) + 4 * (1 - label)]]
        lines.append(f"{' '.join(words)}\t{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_pairs(path):
    """150 English<TAB>Spanish pairs from the bundled corpus."""
    lines = read_text(default_data("translation")).split("\n")[:150]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_text(path):
    """3,000 characters of the bundled text."""
    path.write_text(read_text(default_data("textgen"))[:3000], encoding="utf-8")
    return path


def tiny_pos(folder):
    """The first 40 sentences of each bundled CoNLL-U part."""
    folder.mkdir()
    for part in ("train", "dev", "test"):
        text = read_text(sorted(default_data("tagging").glob(f"*{part}*"))[0])
        (folder / f"tiny-{part}.conllu").write_text("\n\n".join(text.split("\n\n")[:40]) + "\n\n", encoding="utf-8")
    return folder


def tiny_series(path, n=80):
    """A positive monthly series with a season of 12."""
    t = np.arange(n)
    values = 100 + 10 * np.sin(2 * np.pi * t / 12) + t
    path.write_text("date,value\n" + "".join(f"m{i},{v:.2f}\n" for i, v in enumerate(values)), encoding="utf-8")
    return path


TINY = {"sentiment": (tiny_sentiment, "sentiment.txt"), "translation": (tiny_pairs, "pairs.txt"),
        "textgen": (tiny_text, "text.txt"), "tagging": (tiny_pos, "pos"), "timeseries": (tiny_series, "series.csv")}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Task name -> a tiny data file or folder for it."""
    root = tmp_path_factory.mktemp("tiny-data")
    return {task: make(root / name) for task, (make, name) in TINY.items()}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, tiny_data):
    """Task name -> a checkpoint folder trained for one epoch on the tiny data."""
    root = tmp_path_factory.mktemp("checkpoints")
    for task, data in tiny_data.items():
        get_task(task).train(data, backend="numpy", epochs=1, save=root / task, progress=False)
    return {task: root / task for task in tiny_data}
