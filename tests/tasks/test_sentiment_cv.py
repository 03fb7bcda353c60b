"""Sentiment's k-fold cross-validation: stratified folds that test every sentence once, the mean ± std of the
model and of the baselines over the folds, and the --cv option's checks."""
from types import SimpleNamespace

import numpy as np
import pytest

from rnnbackends.cli import main
from rnnbackends.tasks import sentiment


def test_stratified_folds_test_every_sentence_once_and_keep_the_class_balance():
    labels = sentiment.prepare(None).labels
    folds = sentiment.stratified_folds(labels, 10)
    tested = np.concatenate([test for _, _, test in folds])
    assert sorted(tested) == list(range(len(labels)))
    for train, val, test in folds:
        assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
        assert len(train) + len(val) + len(test) == len(labels)
        assert abs(labels[test].mean() - labels.mean()) < 0.01                     # stratified
    assert [len(test) for _, _, test in folds] == [300] * 10


def test_cross_validation_reports_each_fold_and_mean_std(monkeypatch):
    monkeypatch.setitem(sentiment.TRAINING, "ensemble", 1)                        # one model per fold: fast
    d = sentiment.prepare(None)
    first = SimpleNamespace(sentences=d.sentences[:1200], labels=d.labels[:1200], tokenizer=d.tokenizer,
                            tokens=d.tokens[:1200])                             # 3 folds of 400 real sentences
    cv = sentiment.TASK.cross_validate(first, 3, backend=None, epochs=3, seed=0)
    assert set(cv) == {"ours", "bag-of-words logistic regression", "majority class"}
    for scores in cv.values():
        assert len(scores["folds"]) == 3
        assert scores["mean"] == pytest.approx(np.mean(scores["folds"]), abs=1e-4)
        assert scores["std"] == pytest.approx(np.std(scores["folds"]), abs=1e-4)
    assert cv["ours"]["mean"] > cv["majority class"]["mean"] + 0.1                 # it learned
    assert cv["bag-of-words logistic regression"]["mean"] > cv["majority class"]["mean"] + 0.1


@pytest.mark.parametrize("value, message", [("2", "must be at least 3 (one fold tests"),
                                            ("ten", "expected a whole number")])
def test_bad_cv_is_one_line_and_exit_2(capsys, value, message):
    assert main(["train", "sentiment", "--cv", value]) == 2
    assert message in capsys.readouterr().err
