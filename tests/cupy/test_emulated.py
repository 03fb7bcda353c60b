"""The cupy backend end to end on the CPU emulator: the conformance kit (both A-chain paths, every cell) and PyTorch
(nn.RNN, nn.GRU, nn.LSTM).

RNNBACKENDS_CUPY_EMULATE=1 gives the backend xp = numpy, NumPy GEMMs and every CUDA kernel through the
fiber emulator, with device limits small enough that the kit's shapes take both paths on several blocks.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from rnnbackends_cupy.emulation import compiler

pytestmark = pytest.mark.skipif(compiler() is None, reason="no C++ compiler (g++) for the CUDA emulator")


def _kit(**env):
    """Run the conformance kit on the emulated cupy backend in a fresh process; returns (rc, output)."""
    env = {**os.environ, "RNNBACKENDS_CUPY_EMULATE": "1", "RNNBACKENDS_TEST_BACKEND": "cupy", **env}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--pyargs",
                           "rnnbackends.testing"], env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", ["auto", "persistent"])
def test_conformance_kit_on_emulated_cupy(path):
    """The kit passes for rnn, gru and lstm: auto (B ≤ 4 persistent, B > 4 graph) and every shape forced onto the
    persistent kernels; the only skips are the undeclared-cell checks (cupy declares every cell) and the optional
    front-end kernels cupy does not offer."""
    rc, out = _kit(RNNBACKENDS_CUPY_PATH=path)
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert rc == 0 and " passed" in out, out[-3000:]
    assert all(re.search(r"backend 'cupy' declares (gru|lstm)$|backend 'cupy' does not declare "
                         r"(softmax_cross_entropy|embedding_backward|adam_update|matmul)$", line)
               for line in skips), "\n".join(skips)


@pytest.fixture(scope="module")
def emulated():
    from rnnbackends_cupy.backend import CupyBackend
    from rnnbackends_cupy.emulation import EmulatedDevice

    return CupyBackend(device=EmulatedDevice())


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("B", [3, 6], ids=["persistent", "graph"])
def test_matches_torch_rnn(emulated, nonlinearity, B):
    """Forward states and all five gradients equal torch.nn.RNN's (weight_ih = w_x.T, weight_hh = w_a.T)."""
    torch = pytest.importorskip("torch")
    from rnnbackends.testing import make_case

    T, D, H = 7, 3, 10
    lengths = np.array([7, 2, 5, 1, 7, 4][:B])
    (x, a0, w_x, w_a, b_a), lengths = make_case(T, B, D, H, "float64", lengths=lengths, seed=21)
    assert emulated.path(B, H, "float64").kind == ("persistent" if B <= 4 else "graph")
    a, a_n, saved = emulated.forward_sequence(x, a0, w_x, w_a, b_a, lengths=lengths, nonlinearity=nonlinearity)
    rng = np.random.default_rng(22)
    r, s = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    grads = emulated.backward_sequence(saved, r, s)

    rnn = torch.nn.RNN(D, H, nonlinearity=nonlinearity, dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(w_x.T))
        rnn.weight_hh_l0.copy_(torch.from_numpy(w_a.T))
        rnn.bias_ih_l0.copy_(torch.from_numpy(b_a))
        rnn.bias_hh_l0.zero_()
    tx = torch.from_numpy(x).requires_grad_()
    th = torch.from_numpy(a0)[None].clone().requires_grad_()
    packed = torch.nn.utils.rnn.pack_padded_sequence(tx, torch.from_numpy(lengths), enforce_sorted=False)
    out, h_n = rnn(packed, th)
    ta, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    (ta * torch.from_numpy(r)).sum().add((h_n[0] * torch.from_numpy(s)).sum()).backward()
    want = {"a": ta.detach(), "a_n": h_n[0].detach(), "d_x": tx.grad, "d_a0": th.grad[0],
            "d_w_x": rnn.weight_ih_l0.grad.T, "d_w_a": rnn.weight_hh_l0.grad.T, "d_b_a": rnn.bias_ih_l0.grad}
    got = dict(zip(want, (a, a_n) + tuple(grads)))
    for name in want:
        np.testing.assert_allclose(got[name], want[name].numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("force", ["auto", "graph"])
@pytest.mark.parametrize("B", [3, 6], ids=["B3", "B6"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_matches_torch_gru_lstm(emulated, monkeypatch, cell, B, force):
    """States, final state(s) and every gradient (d_x, dA_0, dC_0, dW_X, dW_A, db_A, db_R) equal torch.nn.GRU's /
    nn.LSTM's on packed sequences with h0 (and c0): B = 3 on the persistent kernels (4 blocks) or forced onto the
    graph, B = 6 on the graph; float64."""
    from tests.backends.test_reference_cells_vs_torch import case, theirs

    monkeypatch.setenv("RNNBACKENDS_CUPY_PATH", force)
    T, D, H = 7, 3, 10
    x, w_x, w_a, b_a, b_r, a0, c0, lengths, d_a, d_a_n, d_c_n = args = case(
        cell, T, B, D, H, [7, 2, 5, 1, 7, 4][:B], seed=B + len(cell))
    kind = "graph" if force == "graph" or B > 4 else "persistent"
    assert emulated.path(B, H, "float64", cell).kind == kind
    state0 = (a0, c0) if cell == "lstm" else a0
    a, state_n, saved = emulated.forward_sequence(x, state0, w_x, w_a, b_a, lengths=lengths, cell=cell, b_r=b_r)
    d_x, d_state0, d_w_x, d_w_a, d_b_a, d_b_r = emulated.backward_sequence(
        saved, d_a, (d_a_n, d_c_n) if cell == "lstm" else d_a_n)
    (a_n, c_n), (d_a0, d_c0) = (state_n, d_state0) if cell == "lstm" else ((state_n, None), (d_state0, None))
    want_a, want_a_n, want_c_n, want = theirs(cell, *args)
    got = {"a": a, "a_n": a_n, "c_n": c_n, "d_x": d_x, "d_a0": d_a0, "d_c0": d_c0, "d_w_x": d_w_x, "d_w_a": d_w_a,
           "d_b_a": d_b_a, "d_b_r": d_b_r}
    want = {**want, "a": want_a, "a_n": want_a_n, "c_n": want_c_n}
    for name, value in got.items():
        assert (value is None) == (want[name] is None), name
        if value is not None:
            np.testing.assert_allclose(value, want[name], rtol=1e-9, atol=1e-11, err_msg=name)
