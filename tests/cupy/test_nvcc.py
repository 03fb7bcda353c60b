"""Every .cu file of the cupy backend compiles with nvcc for sm_90 and sm_80; ptxas's report is printed.

Spills (or local-memory stack frames) in the persistent kernels fail the test: their W_A slices and
accumulators must live on-chip. Skips only when nvcc is absent. Run with -s to see the report.
"""
import re
import shutil
import subprocess

import pytest
from rnnbackends_cupy.device import HERE, MODULES, kernel_source

NVCC = shutil.which("nvcc") or (shutil.which("/usr/local/cuda/bin/nvcc"))
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found (install the CUDA toolkit to check the kernels)")

ARCHS = ["sm_90", "sm_80"]


def _ptxas(source_path, arch, tmp_path, *defines):
    cmd = [NVCC, "-std=c++17", f"-arch={arch}", "-cubin", "-Xptxas", "-v", f"-I{HERE}",
           *[f"-D{d}" for d in defines], "-o", str(tmp_path / "out.cubin"), str(source_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
    return proc.stderr


def report(text):
    """{kernel: (registers, stack bytes, spill stores, spill loads)} from ptxas -v output."""
    rows, name = {}, None
    for line in text.splitlines():
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            name = m.group(1)
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            rows[name] = [0, *map(int, m.groups())]
        m = re.search(r"Used (\d+) registers", line)
        if m and name in rows:
            rows[name][0] = int(m.group(1))
    return rows


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename", sorted(MODULES))
def test_cu_compiles_and_persistent_kernels_do_not_spill(filename, arch, tmp_path):
    """nvcc -cubin succeeds; ptxas's registers/spills are printed; persistent kernels have no spills."""
    rows = report(_ptxas(HERE / filename, arch, tmp_path))
    assert rows, f"ptxas reported no kernels for {filename}"
    print(f"\n{filename} {arch}: kernel, registers, stack frame B, spill stores B, spill loads B")
    flagged = []
    for name, (regs, stack, stores, loads) in sorted(rows.items()):
        flag = "  <-- SPILLS" if (stack or stores or loads) and "persistent" in name else ""
        print(f"  {name}: {regs} regs, {stack} B stack, {stores} B spill stores, {loads} B spill loads{flag}")
        if flag:
            flagged.append(name)
    assert not flagged, f"persistent kernels spill or use a stack frame on {arch}: {flagged}"


@pytest.mark.parametrize("filename", sorted(MODULES))
def test_source_as_cupy_gets_it_compiles(filename, tmp_path):
    """The inlined source handed to RawModule compiles, with cooperative groups and with the fallback barrier."""
    src = tmp_path / filename
    src.write_text(kernel_source(filename))
    _ptxas(src, "sm_90", tmp_path)
    _ptxas(src, "sm_90", tmp_path, "RNNB_NO_COOPERATIVE_GROUPS")
