"""scripts/task_metrics.py: the docs' table from the JSON records, a row per task (and variant) and cell in a fixed
order, full records and bare --metrics-out files alike, written between the page's markers; bad input exits 2."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "task_metrics.py"
spec = importlib.util.spec_from_file_location("task_metrics", SCRIPT)
task_metrics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(task_metrics)

CV = {"10-fold cross-validation": {
    "ours": {"mean": 0.8483, "std": 0.0245, "folds": [0.8483] * 10},
    "bag-of-words logistic regression": {"mean": 0.8233, "std": 0.0245, "folds": [0.8233] * 10},
    "majority class": {"mean": 0.5, "std": 0.0, "folds": [0.5] * 10}}}


def write(folder, name, record):
    """One JSON record in ``folder``."""
    (folder / name).write_text(json.dumps(record), encoding="utf-8")


def test_table_rows_from_full_and_bare_records_between_the_markers(tmp_path, capsys):
    write(tmp_path, "sentiment-gru.json", {"task": "sentiment", "backend": "numba", "metric": "test accuracy",
                                           "value": 0.867, "baseline": 0.85, "higher_is_better": True,
                                           "baselines": {"majority class": 0.447,
                                                         "bag-of-words logistic regression": 0.85},
                                           "details": CV, "seconds": 890.0, "examples": ["0.61 positive  Good!"]})
    write(tmp_path, "sentiment.json", {"task": "sentiment", "backend": "numba", "metric": "test accuracy",
                                       "value": 0.87, "baseline": 0.85, "higher_is_better": True, "seconds": 60.0})
    write(tmp_path, "tagging-full-lstm.json", {"task": "tagging", "backend": "numba", "metric": "UPOS accuracy",
                                               "value": 0.941, "baseline": 0.85, "higher_is_better": True,
                                               "details": {"train_sentences": 12544, "test_words": 25094}})
    write(tmp_path, "translation-earlier-numba-build.json", {"task": "translation"})     # not a TASK-CELL record
    page = tmp_path / "index.md"
    page.write_text("# Tasks\n<!-- seqtasks:begin -->\nold table\n<!-- seqtasks:end -->\nafter\n", encoding="utf-8")
    assert task_metrics.main(["--table-only", "--out", str(tmp_path), "--page", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "old table" not in text and text.endswith("<!-- seqtasks:end -->\nafter\n")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[:2] for row in rows] == [["| sentiment", "rnn"], ["| sentiment", "gru"],
                                                     ["| tagging (full)", "lstm"]]
    assert "**0.867**; 10-fold CV 0.848 ± 0.025" in rows[1] and "10-fold CV 0.823 ± 0.025" in rows[1]
    assert rows[1].endswith("| 14.8 min |") and rows[0].endswith("| 1.0 min |") and rows[2].endswith("not recorded |")
    assert "full train (12,544 sentences) / dev / test (25,094 words)" in rows[2] and "0.61 positive  Good!" in text
    capsys.readouterr()


def test_bad_input_exits_2(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("no markers\n", encoding="utf-8")
    assert task_metrics.main(["--table-only", "--out", str(tmp_path), "--page", str(page)]) == 2
    assert "no <!-- seqtasks:begin --> ... <!-- seqtasks:end --> markers" in capsys.readouterr().err
    write(tmp_path, "textgen-gru.json", {"task": "tagging"})
    assert task_metrics.main(["--table-only", "--out", str(tmp_path)]) == 2
    assert "a record of task 'tagging', not textgen" in capsys.readouterr().err
    assert task_metrics.main(["--cv", "2", "--out", str(tmp_path)]) == 2
