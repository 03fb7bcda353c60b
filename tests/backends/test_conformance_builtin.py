"""The conformance kit on every installed backend (numpy, numba, torch, ...; cupy where it can run)."""
from rnnbackends.testing.test_conformance import *  # noqa: F401,F403  the kit's tests and fixture
