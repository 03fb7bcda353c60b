"""The numba backend (issue #3): registered now, implemented by its own issue."""
import numpy as np


class NumbaBackend:
    """Placeholder that reports itself unavailable until the njit kernels land."""

    name = "numba"
    xp = np
    capabilities = frozenset({"tanh", "relu", "float32", "float64", "lengths"})

    @classmethod
    def availability(cls):
        """Unavailable: the kernels are not written yet."""
        return False, "not implemented yet: the njit kernels land with issue #3"
