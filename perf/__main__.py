"""python -m perf run --suite cpu|gpu|e2e [--quick] [--out DIR] ... | compare OLD.json [OLD2.json ...] NEW.json |
headline RESULT..."""
import argparse
import importlib
import os
import sys

SUITES = ("cpu", "gpu", "e2e")


def _pin_threads(argv):
    """--threads N sets the BLAS/OpenMP thread counts before NumPy, torch or numba are imported, and with fewer
    than this process's cores pins it to the first N of them: XLA has no thread-count setting that holds (with
    its one-thread flags JAX still ran on 1.9 cores, H=1024, B=64, T=32), and the pin holds every library alike."""
    if "--threads" in argv and argv.index("--threads") + 1 < len(argv):
        n = argv[argv.index("--threads") + 1]
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[var] = n
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if n.isdigit() and 0 < int(n) < len(cores):
            os.sched_setaffinity(0, cores[:int(n)])


def _suite(argv):
    """The value of --suite in argv (None when absent), read before parsing so the suite can add its options."""
    for i, arg in enumerate(argv):
        if arg == "--suite" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--suite="):
            return arg.split("=", 1)[1]
    return None


def main(argv=None):
    """Parse the command, run a suite or compare two results."""
    argv = sys.argv[1:] if argv is None else argv
    _pin_threads(argv)
    parser = argparse.ArgumentParser(prog="python -m perf", description="rnnbackends' performance suite")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="time a suite's grid and write <suite>.json/.md/.png")
    run.add_argument("--suite", choices=SUITES, required=True)
    run.add_argument("--out", default="perf/results", help="output folder (default: perf/results)")
    cmp = commands.add_parser("compare", help="flag regressions of NEW against one or more saved OLD results")
    cmp.add_argument("results", nargs="+", metavar="OLD.json [OLD2.json ...] NEW.json")
    cmp.add_argument("--tolerance", type=float, default=None,
                     help="slower by more than this fraction is a regression (default: the noise band between "
                          "two or more old runs, else 0.10)")
    from perf import headline
    headline.add_arguments(commands.add_parser(
        "headline", help="write the summary of saved results into the README and docs/perf.md"))
    suite = _suite(argv)
    module = importlib.import_module(f"perf.{suite}") if suite in SUITES and argv[:1] == ["run"] else None
    if module is not None:
        module.add_arguments(run)
    args = parser.parse_args(argv)

    from perf import runner
    if args.command == "headline":
        return headline.main(args)
    if args.command == "compare":
        if len(args.results) < 2:
            parser.error("compare needs at least one old result and the new one: OLD.json [OLD2.json ...] NEW.json")
        lines, regressions = runner.compare(args.results[:-1], args.results[-1], args.tolerance)
        print("\n".join(lines))
        return 1 if regressions else 0
    for path in runner.run(module, args, argv):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
