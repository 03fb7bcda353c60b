"""The numba backend's GRU and LSTM chains, with the GEMMs around them, against torch.nn.GRU / nn.LSTM on packed
sequences on each kernel path: states, final states and every gradient (float64)."""
import pytest

from tests.backends.test_numba_cells import backend_on

pytest.importorskip("numba", reason="numba is not installed")
pytest.importorskip("torch", reason="PyTorch parity tests need torch (pip install torch==2.13.0)")
from tests.backends.test_reference_cells_vs_torch import assert_matches_torch  # noqa: E402  (needs torch)


@pytest.mark.parametrize("path", ["blocked", "blocked-parallel", "blas-step"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("T, B, D, H, lengths", [(1, 1, 1, 1, [1]), (12, 9, 4, 16, [3, 12, 7, 1, 10, 12, 2, 5, 12])])
def test_numba_cells_match_torch(T, B, D, H, lengths, cell, path, monkeypatch):
    """a, A_n (and C_n), and d_x, dA_0 (dC_0), dW_X, dW_A, db_A, db_R equal PyTorch's to 1e-10."""
    assert_matches_torch(backend_on(path, monkeypatch), cell, T, B, D, H, lengths)
