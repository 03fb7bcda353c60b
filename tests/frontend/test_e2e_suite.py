"""The end-to-end perf suite on one small shape: every impl timed, the split adds up, the tables render."""
import argparse

import pytest

pytest.importorskip("torch")          # the suite's peer

from perf import e2e  # noqa: E402


def test_small_e2e_run_times_ours_and_torch_and_splits_each_step():
    parser = e2e.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--small", "--quick", "--tasks", "textgen", "--cells", "rnn", "--backends", "numpy",
                              "--threads", "1"])
    result = e2e.run_suite(args)
    rows = {r["impl"]: r for r in result["rows"]}
    assert set(rows) == {"numpy", "torch"}
    ours = rows["numpy"]
    assert (ours["B"], ours["T"]) == (e2e.SMALL["B"], e2e.SMALL["T"]) and len(ours["repeats_ms"]) == 5
    assert set(ours["split_ms"]) == set(e2e.Split.PARTS) and all(v >= 0 for v in ours["split_ms"].values())
    assert ours["split_ms"]["backend"] > 0 and ours["split_ms"]["loss"] > 0
    assert sum(ours["split_ms"].values()) <= max(ours["repeats_ms"]) * 1.01
    assert 0 < ours["outside_backend"] < 1
    assert ours["speedup_vs_torch"] == pytest.approx(rows["torch"]["median_ms"] / ours["median_ms"])
    targets = result["targets"]["numpy"]
    assert targets["step_worst"] == "textgen rnn"
    result["run"] = {"cpu": "test", "started_utc": "now", "git_commit": ""}
    text = e2e.markdown(result)
    assert "| textgen | rnn | 4 | 6 |" in text and "numpy, 1 thread: training step" in text


def test_every_task_builds_the_same_model_twice_with_matching_losses_of_the_right_size():
    import numpy as np

    import rnnbackends
    backend = rnnbackends.get_backend("numpy")
    for task in e2e.TASKS:
        host = e2e.host_batch(task, *e2e.batch_shape(task, small=True))
        case = e2e.our_case(task, "gru", backend, host)
        logits = case.model.forward(*case.batch.inputs)
        ours = case.loss_fn(logits, case.batch.targets, case.batch.mask)[0]
        _, torch_step, _ = e2e.torch_case(task, "gru", host)
        theirs = torch_step()
        assert np.isfinite(ours) and np.isfinite(theirs)
        assert 0.2 < ours / theirs < 5, f"{task}: our loss {ours}, torch's {theirs}: not the same problem"


def test_unknown_task_is_refused_with_the_choices():
    with pytest.raises(SystemExit, match="choose from sentiment"):
        e2e._names("sentiment,poetry", e2e.TASKS, "task(s)")
