"""perf/cpu.py end to end at toy sizes: every CPU backend against torch.nn.RNN, outputs, targets and compare."""
import argparse
import json

import pytest

from perf import cpu, headline, runner

torch = pytest.importorskip("torch", reason="the CPU suite's peer is torch.nn.RNN (pip install torch==2.13.0)")
pytest.importorskip("numba", reason="numba is not installed")

TOY_GROUPS = {"latency": [(8, 1, 5)], "training": [(16, 4, 6)], "forward-rate": [(24, 3, 4)]}


def run_toy_suite(tmp_path, monkeypatch, *extra):
    """The CPU suite on TOY_GROUPS through perf's runner; returns (result, paths)."""
    monkeypatch.setattr(cpu, "GROUPS", TOY_GROUPS)
    parser = cpu.add_arguments(argparse.ArgumentParser())
    parser.add_argument("--out")
    args = parser.parse_args(["--threads", "1", "--warmup", "1", "--repeats", "2", "--budget", "0.05",
                              "--no-compile-times", "--backends", "numpy,numba", "--peers", "torch",
                              "--out", str(tmp_path), *extra])
    import numba
    threads = numba.get_num_threads()
    try:
        paths = runner.run(cpu, args, ["run", "--suite", "cpu"])
    finally:
        numba.set_num_threads(threads)                    # the suite sets --threads for this whole process
    return json.loads(paths[0].read_text()), paths


def test_cpu_suite_times_every_backend_against_torch(tmp_path, monkeypatch):
    """Rows for numpy, numba and torch per shape and pass, speed-ups against torch, targets and tables written."""
    result, paths = run_toy_suite(tmp_path, monkeypatch)
    rows = result["rows"]
    assert {(r["group"], r["impl"], r["pass"]) for r in rows} == {
        (g, i, p) for g in TOY_GROUPS for i in ("numpy", "numba", "torch") for p in ("forward", "forward+backward")}
    for r in rows:
        assert r["median_ms"] > 0 and r[f"speedup_vs_{cpu.PEER}"] > 0
        if r["impl"] == cpu.PEER:
            assert r[f"speedup_vs_{cpu.PEER}"] == 1.0
        else:
            assert r["peak_bytes"] > 0 and (r["path"] or r["impl"] == "numpy")
    numba_rows = [r for r in rows if r["impl"] == "numba"]
    t = result["targets"]
    assert t["small_tier_shapes"] == 3                                       # every toy shape is H ≤ 256, B ≤ 32
    assert t["worst_fwd_bwd_shape"]["group"] not in cpu.ADDED_GROUPS         # the main grid, apart
    assert t["forward_rate_shape_fwd_bwd_speedup"] == next(
        r[f"speedup_vs_{cpu.PEER}"] for r in numba_rows if r["group"] == "forward-rate" and r["pass"] != "forward")
    table = paths[1].read_text()
    assert "## Targets (numba)" in table and "| forward-rate | 24 | 3 | 4 |" in table
    assert result["machine"]["torch_threads"] == result["machine"]["numba_threads"] == 1
    assert result["sgemm_gflops_by_n"]["before"]                          # measured on the pinned thread
    assert all(0 < r["fraction_of_fma_peak"] < 1 for r in rows) and result["fma_peak_gflops"] > 0
    assert set(result["l2_fma_peak_gflops"]) == {"1", "3", "4"}                  # every toy B is ≤ 8
    for r in (r for r in numba_rows if r["pass"] == "forward"):                 # the chain timed alone
        flops = 2 * r["B"] * r["H"] ** 2 * r["T"]
        assert r["gflops_chain_alone"] == pytest.approx(flops / (r["chain_ms"] * 1e-3) / 1e9)
        assert r["fraction_of_l2_peak"] == pytest.approx(r["gflops_chain_alone"]
                                                         / result["l2_fma_peak_gflops"][str(r["B"])])
    assert t["small_b_chain"]["shapes"] == 3 and "## Target of the small-B chain (numba)" in table


def test_groups_select_part_of_the_grid_and_unknown_ones_are_refused(tmp_path, monkeypatch):
    """--groups runs only the named groups; a misspelt group stops with the valid names."""
    result, _ = run_toy_suite(tmp_path, monkeypatch, "--groups", "training")
    assert {r["group"] for r in result["rows"]} == {"training"}
    assert "none in this run" not in cpu.markdown(result)
    with pytest.raises(SystemExit, match="unknown group.*trainign.*choose from latency"):
        cpu.shapes(groups="trainign")


def test_compare_flags_a_slower_median(tmp_path, monkeypatch):
    """compare reports a row whose median grew by more than the tolerance, and only that one."""
    result, paths = run_toy_suite(tmp_path, monkeypatch, "--groups", "latency")
    slower = json.loads(json.dumps(result))
    slower["rows"][0]["median_ms"] *= 1.5
    new_path = tmp_path / "new.json"
    new_path.write_text(json.dumps(slower))
    lines, regressions = runner.compare(paths[0], new_path)
    assert regressions == 1
    assert sum("REGRESSION" in line for line in lines) == 1


def test_compare_with_two_old_runs_takes_their_noise_band_as_the_tolerance(tmp_path, monkeypatch):
    """Two old runs whose one row differs 1.3×: a new row 1.2× slower than their geometric mean is noise, one
    1.4× slower is a regression; the band and its row are printed."""
    result, paths = run_toy_suite(tmp_path, monkeypatch, "--groups", "latency")
    def variant(name, factors):
        changed = json.loads(json.dumps(result))
        for row, factor in zip(changed["rows"], factors):
            row["median_ms"] *= factor
        (tmp_path / name).write_text(json.dumps(changed))
        return tmp_path / name
    second_old = variant("old2.json", [1.3])
    base = 1.3 ** 0.5                                                        # the geometric mean of 1 and 1.3
    lines, regressions = runner.compare([paths[0], second_old], variant("noise.json", [1.2 * base, 1.2]))
    assert regressions == 0 and any(f"Noise band of {result['rows'][0]['impl']} between the 2 old runs: 1.30×" in line
                                          for line in lines)
    lines, regressions = runner.compare([paths[0], second_old], variant("slower.json", [1.4 * base]))
    assert regressions == 1 and sum("REGRESSION" in line for line in lines) == 1
    assert runner.compare([paths[0], second_old], variant("slower.json", [1.4 * base]), tolerance=0.5)[1] == 0


def test_headline_is_written_between_the_markers_and_nowhere_else(tmp_path, monkeypatch):
    """perf headline: one column pair per result, the targets, the provenance; text outside the markers kept."""
    result, paths = run_toy_suite(tmp_path, monkeypatch)
    two_threads = {**result, "threads": 2}
    second = tmp_path / "threads-2" / "cpu.json"
    second.parent.mkdir()
    second.write_text(json.dumps(two_threads))
    page = tmp_path / "page.md"
    page.write_text(f"before\n{headline.BEGIN}\nstale\n{headline.END}\nafter\n")
    args = headline.add_arguments(argparse.ArgumentParser()).parse_args(
        [str(paths[0]), str(second), "--into", str(page)])
    assert headline.main(args) == 0
    text = page.read_text()
    assert text.startswith(f"before\n{headline.BEGIN}\n") and text.endswith(f"{headline.END}\nafter\n")
    assert "stale" not in text
    assert "| forward, 1 thread | fwd+bwd, 1 thread | forward, 2 threads | fwd+bwd, 2 threads |" in text
    assert "| training (1) |" in text and "Targets (1 thread / 2 threads):" in text and "(target ≥ 3×:" in text
    assert f"(full table: `{paths[1]}`)" in text and "threads-2/cpu.md`" in text


def test_readme_summary_keeps_each_suites_first_table_and_drops_the_per_shape_table():
    """The README's short headline: the opening sentences and group tables; targets and per-shape rows stay in docs."""
    text = ("Speed-up of numba over the fastest peer.\n\n| group | f |\n|---|---|\n| latency (8) | 1.01× |\n\n"
            "Per shape: speed-up of numba over the fastest peer, and that peer.\n\n| group | H, B, T |\n|---|---|\n"
            "| latency | 32, 1, 96 |\n\nTargets:\n- forward: **1.04×**\n\nSpeed-up of cupy over cuDNN.\n\n"
            "| group | f |\n|---|---|\n| deepbench (12) | 1.28× |\n")
    summary = headline.summary(text)
    assert "| latency (8) | 1.01× |" in summary and "| deepbench (12) | 1.28× |" in summary
    assert "32, 1, 96" not in summary and "Per shape" not in summary and "**1.04×**" not in summary


def test_headline_refuses_a_file_without_markers_and_a_file_that_is_no_result(tmp_path):
    """One clear line naming the file and what it lacks."""
    page = tmp_path / "page.md"
    page.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="page.md: needs one <!-- perf-headline:start -->"):
        headline.write_between_markers(page, "x\n")
    with pytest.raises(SystemExit, match="page.md: cannot read a perf result"):
        headline.load([page])


def test_headline_has_one_section_per_suite(tmp_path, monkeypatch):
    """CPU and GPU results in one headline: a table each, the GPU's columns named by its device, cuDNN its peer."""
    result, paths = run_toy_suite(tmp_path, monkeypatch, "--groups", "latency")
    rows = [{"group": "deepbench", "H": 1760, "B": 16, "T": 50, "impl": impl, "pass": p, "median_ms": ms}
            for impl, ms in (("cupy", 2.0), ("cudnn", 3.0)) for p in ("forward", "forward+backward")]
    gpu = {"suite": "gpu", "peer": "cudnn", "primary": "cupy", "dtype": "float32", "machine": {"device": "H100"},
           "rows": rows, "run": {"started_utc": "2026-01-01T00:00:00Z", "git_commit": "abcdef0123"}}
    gpu_path = tmp_path / "gpu.json"
    gpu_path.write_text(json.dumps(gpu))
    text = headline.headline(headline.load([paths[0], gpu_path]))
    assert text.count("| group (shapes) |") == 2
    assert "| forward, H100 | fwd+bwd, H100 |" in text and "| deepbench (1) | 1.50× | 1.50× |" in text
    assert "over cuDNN" in text and "- H100: torch ?, cuDNN ?; 2026-01-01T00:00:00Z, commit abcdef0" in text


def test_the_pages_the_headline_writes_have_their_markers():
    """README.md and docs/perf.md each hold one headline block for python -m perf headline to rewrite."""
    for page in headline.PAGES:
        text = page.read_text(encoding="utf-8")
        assert text.count(headline.BEGIN) == text.count(headline.END) == 1, page
        assert text.index(headline.BEGIN) < text.index(headline.END), page


def test_headline_lists_the_gated_cells_targets(tmp_path, monkeypatch):
    """A run with the GRU group: its speed-ups over torch.nn.GRU in the table and a targets line of its own."""
    monkeypatch.setattr(cpu, "GROUPS", {**TOY_GROUPS, "gru-training": TOY_GROUPS["training"]})
    parser = cpu.add_arguments(argparse.ArgumentParser())
    parser.add_argument("--out")
    args = parser.parse_args(["--threads", "1", "--warmup", "1", "--repeats", "2", "--budget", "0.05",
                              "--no-compile-times", "--backends", "numba", "--groups", "training,gru-training",
                              "--peers", "torch", "--out", str(tmp_path)])
    paths = runner.run(cpu, args, ["run", "--suite", "cpu"])
    text = headline.headline(headline.load([paths[0]]))
    assert "| gru-training (1) |" in text
    assert "- GRU over torch.nn.GRU, forward+backward on the training shapes: geometric mean **" in text


def test_reported_path_is_the_one_the_call_takes_with_blas_held():
    """With NumPy's BLAS on two threads a wide step picks per-step BLAS, but inside a call the handle holds BLAS
    to one thread and the chain runs in tiles: the suite labels the row as the call runs it."""
    from threadpoolctl import threadpool_limits

    import rnnbackends
    backend = rnnbackends.get_backend("numba")
    T, B, H = 64, 16, 1024
    with threadpool_limits(2, user_api="blas"):
        assert backend.impl.path(T, B, H) == "blas-step"
        with backend._threads(T * B * H * H):
            assert backend.impl.path(T, B, H).startswith("blocked")


def test_interleaved_timing_visits_every_call_in_turn_each_round():
    """Rounds A B A B ..., before() ahead of each turn, warm-up first, the repeats shared between rounds; a turn of a
    short call starts with one untimed call, a turn of a long one does not."""
    order, turns = [], []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b")}
    clock = iter(range(1, 1000))
    timed = runner.time_interleaved(calls, warmup=1, repeats=6, budget_s=1e9, rounds=3, before=turns.append,
                                    clock=lambda fn: (fn(), next(clock))[1])
    assert order == ["a", "b"] + ["a", "a", "a", "b", "b", "b"] * 3
    assert turns == ["a", "b"] * 4
    assert timed["a"] == (5.5, [1, 2, 5, 6, 9, 10]) and timed["b"][1] == [3, 4, 7, 8, 11, 12]
    order.clear()
    runner.time_interleaved(calls, warmup=1, repeats=3, budget_s=1e9, rounds=3,
                            clock=lambda fn: (fn(), 500.0)[1])                  # 500 ms calls: no turn warm-up
    assert order == ["a", "b"] + ["a", "a", "b", "b"] + ["a", "b"] * 2


def test_interleaved_timing_keeps_the_least_repeats_when_the_budget_is_spent():
    """A budget of 0 still times min_repeats calls, spread over the rounds."""
    timed = runner.time_interleaved({"a": lambda: None}, warmup=0, repeats=10, budget_s=0, rounds=3,
                                    min_repeats=3)
    assert len(timed["a"][1]) == 3


def test_fma_peak_passes_the_sgemm_rate_and_bounds_the_speedup_over_the_fastest_peer():
    """The tile's FMA rate is at least NumPy's GEMM rate on the same thread; a peer at half the peak leaves 2×."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1, user_api="blas"):
        sgemm, _ = runner.sgemm_gflops(sizes=(512,))
    assert cpu.fma_peak_gflops(1) > 0.9 * sgemm
    rows = [{"group": "training", "H": 8, "B": 2, "T": 3, "pass": "forward", "impl": impl,
             "fraction_of_fma_peak": fraction} for impl, fraction in (("numba", 0.4), ("torch", 0.25), ("jax", 0.5))]
    assert cpu.peak_bound(rows, {"torch", "jax"}) == {("training", 8, 2, 3, "forward"): 2.0}
    assert cpu.peak_bound(rows, {"torch"}) == {("training", 8, 2, 3, "forward"): 4.0}
    assert cpu.peak_bound(rows[1:], {"torch"}) == {}                            # numba not timed there


def test_small_b_target_takes_the_worst_chain_against_the_l2_peak_of_its_batch():
    """Eight rows reuse each weight eight times, so their L2-resident rate passes one row's; the target reports the
    worst chain's share of the peak at its own B and counts the shapes within 2×."""
    assert cpu.l2_fma_peak_gflops(1, 8) > cpu.l2_fma_peak_gflops(1, 1) > 0
    shape = {"H": 8, "T": 3, "pass": "forward"}
    rows = [{"group": "latency", "B": 1, "impl": "numba", "fraction_of_l2_peak": 0.3, **shape},
            {"group": "training", "B": 8, "impl": "numba", "fraction_of_l2_peak": 0.7, **shape},
            {"group": "training", "B": 8, "impl": "torch", "fraction_of_fma_peak": 0.9, **shape}]
    t = cpu.small_b_targets(rows)
    assert (t["worst"], t["worst_shape"], t["shapes"], t["reached"]) == (0.3, "latency H=8 B=1 T=3", 2, 1)
    assert cpu.small_b_targets(rows[2:]) == {}


def test_threads_pins_the_process_to_that_many_cores():
    """--threads 1 sets the thread variables and pins the process to one core, so every library (JAX has no
    thread setting that holds) runs on one; without --threads nothing is pinned."""
    import os
    import subprocess
    import sys
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("this process has one core: nothing to pin")
    probe = ("import os, sys; from perf.__main__ import _pin_threads; _pin_threads(sys.argv[1:]); "
             "print(len(os.sched_getaffinity(0)), os.environ.get('OPENBLAS_NUM_THREADS'))")
    run = [sys.executable, "-c", probe, "run", "--suite", "cpu"]
    pinned = subprocess.run(run + ["--threads", "1"], capture_output=True, text=True, check=True)
    free = subprocess.run(run, capture_output=True, text=True, check=True)
    assert pinned.stdout.split() == ["1", "1"]
    assert int(free.stdout.split()[0]) == len(os.sched_getaffinity(0))


def test_cpu_model_names_the_widest_vector_extension():
    """The recorded CPU tells an AVX-512 VM from an AVX2 one of the same model name."""
    cpuinfo = "processor\t: {n}\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx fma{extra}\n\n"
    assert runner.cpu_model(cpuinfo.format(n=0, extra=" avx2 avx512f avx512bw") * 2) == "AMD EPYC (AVX-512)"
    assert runner.cpu_model(cpuinfo.format(n=0, extra=" avx2")) == "AMD EPYC (AVX2)"
    assert runner.cpu_model(cpuinfo.format(n=0, extra="")) == "AMD EPYC"
