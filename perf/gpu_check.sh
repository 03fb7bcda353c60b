#!/usr/bin/env bash
# One command for a GPU node (CUDA, CuPy, PyTorch, numba, pluggy and pytest installed; no network needed):
#   bash perf/gpu_check.sh OUT_DIR
# installs this checkout without dependencies, prints the device, compiles every .cu with nvcc and NVRTC
# (cuda-bindings, if installed), runs the conformance kit (rnn, gru, lstm) and the GPU tests on the real device,
# compute-sanitizer (memcheck, racecheck, synccheck) on one small case of each kernel of every cell, then the GPU
# perf grid for every cell; writes gpu.json, gpu.md, summary.md and every log under OUT_DIR.
# Budget: about 10 minutes on one H100/H200. Exit status: 0 only if every step passed.
set -uo pipefail

OUT=${1:?usage: bash perf/gpu_check.sh OUT_DIR}
PY=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$HERE"
unset RNNBACKENDS_CUPY_EMULATE RNNBACKENDS_CUPY_PATH
export CUPY_TF32=0 PYTHONUNBUFFERED=1
SUMMARY="$OUT/summary.md"
START=$(date +%s)
FAILED=0
echo "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" >"$SUMMARY"
echo >>"$SUMMARY"

step() {  # step NAME TIMEOUT_S COMMAND...: run with a time limit, log to OUT/NAME.log, record the status
    local name=$1 limit=$2
    shift 2
    local t0=$(date +%s)
    echo "=== $name: $*"
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    local status=passed
    [ $rc -ne 0 ] && status="FAILED (exit $rc$([ $rc -eq 124 ] && echo ', timed out'))" && FAILED=1
    echo "- $name: $status in $(( $(date +%s) - t0 )) s (log: $name.log)" | tee -a "$SUMMARY"
}

step install 120 "$PY" -m pip install --no-deps --no-build-isolation -e .

step device 60 bash -c "nvidia-smi; $PY - <<'EOF'
import cupy, torch
from rnnbackends_cupy.backend import CupyBackend
p = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
print('device:', p['name'], 'sm_%d%d' % (p['major'], p['minor']), p['multiProcessorCount'], 'SMs',
      p.get('sharedMemPerBlockOptin'), 'B shared/block opt-in, cooperative', p.get('cooperativeLaunch'))
print('cupy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion(),
      'driver', cupy.cuda.runtime.driverGetVersion(), '| torch', torch.__version__, 'cuDNN', torch.backends.cudnn.version())
print('cupy backend:', CupyBackend.availability())
import os; print('CUDA_PATH:', os.environ.get('CUDA_PATH'), '| cupy.cuda.get_cuda_path():', cupy.cuda.get_cuda_path())
EOF
$PY -m rnnbackends.cli backends || rnnbackends backends"

if command -v nvcc >/dev/null; then
    step nvcc 180 "$PY" -m pytest -q -s -p no:cacheprovider tests/cupy/test_nvcc.py
fi
step nvrtc 240 "$PY" -m pytest -q -rs -p no:cacheprovider tests/cupy/test_nvrtc.py  # skips without cuda-bindings

step kit 240 env RNNBACKENDS_TEST_BACKEND=cupy "$PY" -m pytest -q -p no:cacheprovider --pyargs rnnbackends.testing

step gpu_tests 420 "$PY" -m pytest -q -p no:cacheprovider tests/cupy/test_gpu.py \
    --deselect "tests/cupy/test_gpu.py::test_conformance_kit_on_device[auto]"  # the kit step ran auto

# One small case per kernel and cell: the persistent pairs (cooperative) and the step pairs (eagerly, then as a graph).
cat >"$OUT/sanitize_case.py" <<'EOF'
import os, sys
sys.path.insert(0, os.getcwd())  # the checkout: the tests.cupy case helpers
import cupy, numpy as np
from rnnbackends.testing import make_case
from rnnbackends_cupy.backend import CupyBackend
from tests.cupy.test_emulator import _cell_inputs, _run_cell
be = CupyBackend()
for path, B in (("persistent", 3), ("graph", 6)):
    os.environ["RNNBACKENDS_CUPY_PATH"] = path
    for dtype in ("float32", "float64"):
        arrays, lengths = make_case(5, B, 3, 40, dtype, lengths=[5, 2, 1, 4, 5, 3][:B])
        a, a_n, saved = be.forward_sequence(*map(cupy.asarray, arrays), lengths=lengths)
        be.backward_sequence(saved, cupy.ones_like(a), cupy.ones_like(a_n))
        for cell in ("gru", "lstm"):
            inputs = _cell_inputs(cell, 5, B, 40, dtype, [5, 2, 1, 4, 5, 3][:B])
            _run_cell(be, cell, *[v if i == 6 else cupy.asarray(v) for i, v in enumerate(inputs)])
cupy.cuda.Device().synchronize()
print("sanitizer case ran; persistent_error =", be.device.persistent_error)
sys.exit(1 if be.device.persistent_error else 0)
EOF
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ -x "$SAN" ]; then
    for tool in memcheck racecheck synccheck; do
        step "sanitizer_$tool" 150 env RNNBACKENDS_CUPY_GRAPHS=0 "$SAN" --tool "$tool" --error-exitcode 3 \
            "$PY" "$OUT/sanitize_case.py"
    done
    step sanitizer_memcheck_graphs 150 "$SAN" --tool memcheck --error-exitcode 3 "$PY" "$OUT/sanitize_case.py"
else
    echo "- compute-sanitizer: not found, skipped" | tee -a "$SUMMARY"
    FAILED=1
fi

# NCCL (cupy.cuda.nccl) for data-parallel gradients; with mpi4py, every GPU of this node as one rank.
step nccl 120 "$PY" -m pytest -q -rs -p no:cacheprovider tests/distributed/test_nccl_gpu.py
GPUS=$("$PY" -c "import cupy; print(cupy.cuda.runtime.getDeviceCount())" 2>/dev/null || echo 0)
if [ "$GPUS" -gt 1 ] && command -v mpiexec >/dev/null && "$PY" -c "import mpi4py" 2>/dev/null; then
    step nccl_ranks 120 mpiexec -n "$GPUS" "$PY" -m pytest -q -rs -p no:cacheprovider tests/distributed/test_nccl_gpu.py
fi

ELAPSED=$(( $(date +%s) - START ))
BUDGET=$(( 540 - ELAPSED ))  # leave the perf grid (three cells) what is left of ~9 minutes
[ $BUDGET -lt 120 ] && BUDGET=120
step perf 420 "$PY" -m perf run --suite gpu --out "$OUT" --time-budget "$BUDGET"
[ -f "$OUT/gpu.md" ] && cat "$OUT/gpu.md"

echo "- total: $(( $(date +%s) - START )) s" | tee -a "$SUMMARY"
echo
cat "$SUMMARY"
echo "results in $OUT (commit them under perf/results/)"
exit $FAILED
