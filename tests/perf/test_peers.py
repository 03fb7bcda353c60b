"""The CPU suite's peers (JAX, ONNX Runtime beside torch) checked against the reference, the fastest-peer speed-ups,
the contended mode and NumPy's BLAS held to one thread inside a backend's call."""
import argparse
import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from perf import cpu, headline, peers, runner
from rnnbackends import onnx_export

pytest.importorskip("torch", reason="the CPU suite's peer is torch.nn.RNN (pip install torch==2.13.0)")
pytest.importorskip("numba", reason="numba is not installed")

CELLS = ("rnn", "gru", "lstm")
TOY_GROUPS = {"latency": [(8, 1, 5)], "gru-training": [(12, 3, 4)], "lstm-training": [(12, 3, 4)]}


def installed_peers():
    """The peers installed here, torch first."""
    return [name for name in peers.PEERS if peers.installed(name)]


@pytest.fixture
def clean_xla_flags(monkeypatch):
    """XLA_FLAGS restored after a test that pins JAX's threads."""
    monkeypatch.setenv("XLA_FLAGS", "")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name", peers.PEERS)
def test_each_peer_agrees_with_the_reference(name, cell, clean_xla_flags):
    """Outputs, final states and (where the peer has a backward) every gradient within the tolerance of the
    float64 NumPy reference, at a shape with padding-free lengths, H ≠ D-gate block sizes and B > 1."""
    if not peers.installed(name):
        pytest.skip(f"{name} is not installed (pip install -e '.[perf]')")
    p = cpu.problem(16, 3, 7, "float32", cell)
    got = peers.outputs(name, peers.passes(name, p, cell, threads=1), cell)
    errors = peers.disagreement(got, peers.reference_outputs(p, cell))
    want = {"a", "a_n"} | ({"c_n"} if cell == "lstm" else set())
    if name not in peers.FORWARD_ONLY:
        want |= {"d_x", "d_a0", "d_w_x", "d_w_a", "d_b_a", "d_b_r"} | ({"d_c0"} if cell == "lstm" else set())
    assert set(errors) == want
    assert max(errors.values()) < peers.TOLERANCE, errors


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_check_catches_gates_in_our_order_handed_to_onnx(cell, monkeypatch):
    """ONNX orders the gates differently (z, r, h; i, o, f, c): handing ours over unchanged is caught."""
    pytest.importorskip("onnxruntime", reason="pip install -e '.[perf]'")
    monkeypatch.setitem(onnx_export.GATE_ORDER, cell, tuple(range(cpu.GATES[cell])))
    p = cpu.problem(16, 3, 7, "float32", cell)
    errors = peers.disagreement(peers.outputs("onnxruntime", peers.passes("onnxruntime", p, cell, 1), cell),
                                peers.reference_outputs(p, cell))
    assert errors["a"] > 100 * peers.TOLERANCE


def test_jax_on_one_thread_takes_the_flags_before_it_starts():
    """In a fresh process: pin_jax_threads(1) sets XLA_FLAGS, and JAX starts and computes with them."""
    pytest.importorskip("jax", reason="pip install -e '.[perf]'")
    code = ("import os; from perf import peers; print(peers.pin_jax_threads(1)); import jax.numpy as jnp; "
            "print(float(jnp.arange(4.0).sum())); print(os.environ['XLA_FLAGS'])")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=headline.ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:3] == ["1", "6.0", "--xla_cpu_multi_thread_eigen=false "
                                                          "intra_op_parallelism_threads=1"]


def run_toy_suite(tmp_path, monkeypatch, *extra):
    """The CPU suite on TOY_GROUPS with numba and every installed peer; returns (result, paths)."""
    monkeypatch.setattr(cpu, "GROUPS", TOY_GROUPS)
    monkeypatch.setenv("XLA_FLAGS", "")
    parser = cpu.add_arguments(argparse.ArgumentParser())
    parser.add_argument("--out")
    args = parser.parse_args(["--threads", "1", "--warmup", "1", "--repeats", "2", "--budget", "0.05",
                              "--no-compile-times", "--backends", "numba", "--out", str(tmp_path), *extra])
    import numba
    threads = numba.get_num_threads()
    try:
        paths = runner.run(cpu, args, ["run", "--suite", "cpu"])
    finally:
        numba.set_num_threads(threads)                    # the suite sets --threads for this whole process
    return json.loads(paths[0].read_text()), paths


def test_suite_times_every_peer_and_our_speedup_over_the_fastest(tmp_path, monkeypatch):
    """Every installed peer timed on every cell (ONNX Runtime forward only); each row's speed-up over the fastest
    peer of its shape and pass is that peer's median over its own; versions and JAX's thread pin recorded."""
    jax_started = "jax" in sys.modules and peers._jax_started()         # by an earlier test in this process
    result, paths = run_toy_suite(tmp_path, monkeypatch)
    names = installed_peers()
    rows = runner.timed_rows(result)
    assert result["peers"] == names and not result["peers_skipped"]
    for group in TOY_GROUPS:
        for pass_name in runner.PASSES:
            same = [r for r in rows if r["group"] == group and r["pass"] == pass_name]
            timed = {r["impl"] for r in same}
            assert timed == {"numba", *(n for n in names if pass_name == "forward" or n not in peers.FORWARD_ONLY)}
            fastest = min((r for r in same if r["impl"] in peers.PEERS), key=lambda r: r["median_ms"])
            for r in same:
                assert r["best_peer"] == fastest["impl"]
                assert (r["impl"] in peers.PEERS) == (0 <= r.get("reference_error", -1) < peers.TOLERANCE)
                assert r["speedup_vs_best_peer"] == pytest.approx(fastest["median_ms"] / r["median_ms"])
    machine = result["machine"]
    for name in names:
        assert machine[name] == peers.installed(name)
    if "jax" in names and jax_started:
        assert machine["jax_threads"] == "all cores (JAX had started before --threads 1 could pin it)"
    elif "jax" in names:
        assert machine["jax_threads"] == 1 and "--xla_cpu_multi_thread_eigen=false" in machine["xla_flags"]
    if "onnxruntime" in names:
        assert machine["onnxruntime_threads"] == {"intra_op": 1, "inter_op": 1}
    best = result["targets"]["best_peer"]
    assert best["fwd"]["shapes"] == best["fwd_bwd"]["shapes"] == len(TOY_GROUPS)
    for label, pass_name in (("fwd", "forward"), ("fwd_bwd", "forward+backward")):   # the bound at the FMA peak
        bounds = [1 / max(r["fraction_of_fma_peak"] for r in rows if r["impl"] in peers.PEERS
                          and (r["group"], r["pass"]) == (group, pass_name)) for group in TOY_GROUPS]
        assert best[label]["peak_bound_geomean"] == pytest.approx(runner.geomean(bounds))
    table = paths[1].read_text()
    assert "## Headline: speed-up over the fastest peer of each shape" in table
    assert "forward over the fastest peer of each shape (3 shapes; fastest peer: " in table
    assert "a kernel running every FLOP at the FMA peak would reach" in table and "FMA peak " in table
    text = headline.headline(headline.load([paths[0]]))
    assert "over the fastest peer of each shape" in text and "| lstm-training | 12, 3, 4 |" in text
    assert "- forward+backward over the fastest peer of each shape: geometric mean **" in text
    assert f"; worst at {best['fwd_bwd']['worst_shape']} against {best['fwd_bwd']['worst_peer']} (1 thread)" in text


def test_a_missing_peer_is_skipped_and_named(tmp_path, monkeypatch):
    """A peer that is not installed: no rows, named with the install command in the JSON and the table."""
    real = peers.installed
    monkeypatch.setattr(peers, "installed", lambda name: None if name == "jax" else real(name))
    result, paths = run_toy_suite(tmp_path, monkeypatch, "--peers", "jax,onnxruntime", "--groups", "latency")
    assert "jax" in result["peers_skipped"] and "pip install" in result["peers_skipped"]["jax"]
    assert "jax" not in {r["impl"] for r in result["rows"]}
    assert "jax skipped: not installed" in paths[1].read_text()
    with pytest.raises(SystemExit, match="unknown peer.*tensorflow.*choose from torch, jax, onnxruntime"):
        run_toy_suite(tmp_path, monkeypatch, "--peers", "tensorflow")


def test_a_peer_that_disagrees_is_not_timed(tmp_path, monkeypatch):
    """ONNX Runtime handed the GRU gates in the wrong order: a skipped row saying by how much, no timing."""
    pytest.importorskip("onnxruntime", reason="pip install -e '.[perf]'")
    monkeypatch.setitem(onnx_export.GATE_ORDER, "gru", (0, 1, 2))
    result, paths = run_toy_suite(tmp_path, monkeypatch, "--peers", "onnxruntime", "--groups", "gru-training")
    onnx_rows = [r for r in result["rows"] if r["impl"] == "onnxruntime"]
    assert len(onnx_rows) == 1 and onnx_rows[0]["skipped"].startswith("disagrees with the reference: a off by")
    assert "onnxruntime" not in {r.get("best_peer") for r in result["rows"]}
    assert "disagrees with the reference" in paths[1].read_text()


def test_compare_reads_an_old_result_without_peers(tmp_path, monkeypatch):
    """compare matches a new result with peer rows against a committed result that has none (the old code's run)."""
    old = headline.ROOT / "perf" / "results" / "compare" / "old-be6077c-run1.json"
    new = json.loads(old.read_text())
    for row in runner.timed_rows(new):
        row.update(best_peer="torch", speedup_vs_best_peer=row["speedup_vs_torch"])
    new["rows"] += [{**row, "impl": "jax"} for row in runner.timed_rows(new) if row["impl"] == "torch"]
    new["peers"] = ["torch", "jax"]
    new_path = tmp_path / "cpu.json"
    new_path.write_text(json.dumps(new))
    lines, regressions = runner.compare(old, new_path)
    matched = len(runner.timed_rows(json.loads(old.read_text())))
    assert regressions == 0 and sum(line.count("|") > 5 for line in lines[2:]) == matched


def test_contended_mode_times_default_against_one_thread_beside_a_burner(tmp_path, monkeypatch):
    """--contended: a burner process runs during every timing and is gone afterwards; per shape and pass the
    default-threads and one-thread rows, their ratio, the summary, the table and the headline line."""
    burners, seen_running = [], []
    real_start, real_interleaved = cpu.start_burner, cpu.interleaved

    def start_burner():
        burners.append(real_start())
        return burners[-1]

    def interleaved(*args, **kwargs):
        seen_running.append(all(b.poll() is None for b in burners) and bool(burners))
        return real_interleaved(*args, **kwargs)
    monkeypatch.setattr(cpu, "start_burner", start_burner)
    monkeypatch.setattr(cpu, "interleaved", interleaved)
    result, paths = run_toy_suite(tmp_path, monkeypatch, "--contended", "--threads", "2")
    assert len(burners) == 1 and all(seen_running) and len(seen_running) == 2 * len(TOY_GROUPS)
    assert burners[0].poll() is not None                                 # stopped with the run
    rows = runner.timed_rows(result)
    assert {(r["group"], r["impl"], r["pass"]) for r in rows} == {
        (g, i, p) for g in TOY_GROUPS for i in ("numba", "numba-1-thread") for p in runner.PASSES}
    for r in rows:
        if r["impl"] == "numba":
            one = next(o for o in rows if o["impl"] == "numba-1-thread" and o["group"] == r["group"]
                       and o["pass"] == r["pass"])
            assert r["contended_slowdown"] == pytest.approx(r["median_ms"] / one["median_ms"])
            assert len(r["repeats_ms"]) == len(one["repeats_ms"])             # alternating, call by call
    summary = result["contended"]["forward+backward"]
    assert summary["slowdown_worst"] == max(r["contended_slowdown"] for r in rows if r["impl"] == "numba"
                                            and r["pass"] == "forward+backward")
    assert "| 2 threads ms | 1 thread ms | slowdown |" in paths[1].read_text()
    plain, _ = run_toy_suite(tmp_path / "plain", monkeypatch, "--peers", "torch", "--groups", "latency")
    plain_path = tmp_path / "plain.json"
    plain_path.write_text(json.dumps(plain))
    text = headline.headline(headline.load([plain_path, paths[0]]))
    assert "Beside a CPU-burning process (`--contended`):" in text
    assert "- contended (one process spinning a Python loop), forward+backward: default threads (2)" in text
    assert "- 2 threads, contended:" in text


# -- NumPy's BLAS inside a backend's call -----------------------------------------------------------------

@functools.cache
def numpy_blas():
    """The files of NumPy's BLAS: the BLAS libraries loaded by a process that imports only NumPy (this one may hold
    others, such as SciPy's, loaded by JAX)."""
    code = ("import json, numpy; from threadpoolctl import threadpool_info; "
            "print(json.dumps([i['filepath'] for i in threadpool_info() if i['user_api'] == 'blas']))")
    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     check=True).stdout)


def blas_threads():
    """The thread count of NumPy's BLAS."""
    from threadpoolctl import threadpool_info
    return max(i["num_threads"] for i in threadpool_info() if i["filepath"] in numpy_blas())


def recording_backend(owns_threads, fail=False):
    """A validating handle around the reference backend that records BLAS's thread count inside its chains."""
    import rnnbackends
    from rnnbackends.dispatch import Backend
    from rnnbackends.reference import ReferenceBackend
    seen = []

    class Recording(ReferenceBackend):
        def rnn_forward_chain(self, *args):
            seen.append(blas_threads())
            if fail:
                raise RuntimeError("a kernel failed")
            return super().rnn_forward_chain(*args)

        def rnn_backward_chain(self, *args):
            seen.append(blas_threads())
            return super().rnn_backward_chain(*args)
    Recording.owns_threads = owns_threads
    return Backend(Recording(), rnnbackends.get_backend("numpy").info), seen


HELD = (64, 4, 16)     # H, B, T: T·B·H² = 2¹⁸ multiply-adds, the smallest call the handle holds BLAS for


@pytest.mark.parametrize("owns_threads, shape, inside", [(True, HELD, 1), (False, HELD, 2), (True, (8, 2, 3), 2)])
def test_blas_is_held_to_one_thread_inside_a_backend_that_owns_its_threads(owns_threads, shape, inside):
    """BLAS on 2 threads outside; 1 inside forward and backward of a backend with owns_threads, its own count
    otherwise (the NumPy reference has no threads but BLAS's) and in calls too small for any threads; 2 again after
    each call."""
    from threadpoolctl import threadpool_limits
    backend, seen = recording_backend(owns_threads)
    p = cpu.problem(*shape, "float32")
    with threadpool_limits(2, user_api="blas"):
        _, _, saved = backend.forward_sequence(p["x"], p["a0"], p["w_x"], p["w_a"], p["b_a"])
        assert blas_threads() == 2
        backend.backward_sequence(saved, p["d_a"], p["d_a_n"])
        assert blas_threads() == 2
    assert seen == [inside, inside]


def test_blas_threads_come_back_when_the_call_raises():
    """A kernel that raises inside the call leaves BLAS at its count from before."""
    from threadpoolctl import threadpool_limits
    backend, seen = recording_backend(True, fail=True)
    p = cpu.problem(*HELD, "float32")
    with threadpool_limits(2, user_api="blas"):
        with pytest.raises(RuntimeError, match="a kernel failed"):
            backend.forward_sequence(p["x"], p["a0"], p["w_x"], p["w_a"], p["b_a"])
        assert seen == [1] and blas_threads() == 2


def test_the_numba_backend_owns_its_threads():
    """numba's calls through the handle run with BLAS on one thread (its kernels split the work themselves)."""
    import rnnbackends
    backend = rnnbackends.get_backend("numba")
    assert backend.impl.owns_threads is True
    assert np.isfinite(backend.forward_sequence(*(cpu.problem(8, 2, 3, "float32")[k]
                                                  for k in ("x", "a0", "w_x", "w_a", "b_a")))[0]).all()


def test_idle_cores_counts_the_cores_other_runnable_threads_leave():
    """/proc/loadavg's running count includes the caller: one running (us) leaves every core, each other runnable
    thread takes one, never below one; an unreadable count leaves every core."""
    from rnnbackends.dispatch import idle_cores
    cores = len(os.sched_getaffinity(0))
    assert idle_cores("0.50 0.40 0.30 1/180 4242") == cores
    assert idle_cores(b"2.00 1.00 0.50 2/180 4242") == max(1, cores - 1)
    assert idle_cores("9.00 9.00 9.00 40/180 4242") == 1
    assert idle_cores("garbled") == cores
    assert 1 <= idle_cores() <= cores


def test_idle_cores_reads_a_busy_count_again_after_yielding(monkeypatch):
    """A thread that has just finished our previous work still counts as running for a moment: a busy count is
    read once more after yielding the core and the lower one kept; a count busy both times stays busy."""
    from rnnbackends import dispatch
    cores = len(os.sched_getaffinity(0))
    counts = iter([2, 1])
    monkeypatch.setattr(dispatch, "_running", lambda loadavg: next(counts))
    assert dispatch.idle_cores() == cores                                   # transient: every core
    monkeypatch.setattr(dispatch, "_running", lambda loadavg: 2)
    assert dispatch.idle_cores() == max(1, cores - 1)                       # another runnable thread both times
