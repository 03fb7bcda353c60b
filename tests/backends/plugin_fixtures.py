"""Throwaway plugin distributions for discovery tests: written as source, installed with pip or as dist-info."""
import textwrap
from pathlib import Path

# A backend written by "someone else" from the public names only, for contract version 1 (the simple cell,
# five gradients): its own per-step loop in NumPy. Version 2 adapts it for cell="rnn".
THIRD_PARTY = textwrap.dedent('''
    import numpy as np
    from rnnbackends import BackendSpec, hookimpl

    @hookimpl
    def rnnbackends_register_backends(register):
        register(BackendSpec("thirdparty", 1, 1, "cpu", "thirdparty_rnn:LoopBackend"))

    class LoopBackend:
        name, xp = "thirdparty", np
        capabilities = frozenset({"tanh", "float32", "float64", "lengths"})

        @classmethod
        def availability(cls):
            return True, "pure NumPy"

        def forward_sequence(self, x, a0, w_x, w_a, b_a, *, lengths=None, nonlinearity="tanh"):
            T, B, _ = x.shape
            n = np.full(B, T) if lengths is None else lengths
            a = np.zeros((T, B, w_a.shape[0]), x.dtype)
            for b in range(B):
                h = a0[b]
                for t in range(n[b]):
                    h = a[t, b] = np.tanh(x[t, b] @ w_x + h @ w_a + b_a)
            a_n = a[n - 1, np.arange(B)]
            return a, a_n, (x, a0, w_x, w_a, a, n)

        def backward_sequence(self, saved, d_a, d_a_n=None):
            x, a0, w_x, w_a, a, n = saved
            T, B, _ = x.shape
            grads = [np.zeros_like(x), np.zeros_like(a0), np.zeros_like(w_x), np.zeros_like(w_a),
                     np.zeros_like(w_a[0])]
            for b in range(B):
                carry = np.zeros_like(a0[b]) if d_a_n is None else d_a_n[b].copy()
                for t in reversed(range(n[b])):
                    dz = (d_a[t, b] + carry) * (1 - a[t, b] ** 2)
                    prev = a[t - 1, b] if t else a0[b]
                    grads[0][t, b] = w_x @ dz
                    grads[2] += np.outer(x[t, b], dz)
                    grads[3] += np.outer(prev, dz)
                    grads[4] += dz
                    carry = w_a @ dz
                grads[1][b] = carry
            return tuple(grads)
''')

# A device backend as a third party writes it on top of the shared host code: just the two chain methods.
CHAIN_ONLY = textwrap.dedent('''
    import numpy as np
    from rnnbackends import BACKEND_API_VERSION, BackendSpec, hookimpl
    from rnnbackends.chain import ChainBackend

    @hookimpl
    def rnnbackends_register_backends(register):
        register(BackendSpec("chainonly", BACKEND_API_VERSION, 1, "cpu", "chainonly_rnn:StepBackend"))

    class StepBackend(ChainBackend):
        name, xp = "chainonly", np
        capabilities = frozenset({"rnn", "tanh", "float32", "float64", "lengths"})

        @classmethod
        def availability(cls):
            return True, "two chain methods over rnnbackends.chain"

        def rnn_forward_chain(self, z, a0, w_a, b_a, steps, nonlinearity):
            for t in range(len(z)):
                prev = a0 if t == 0 else z[t - 1]
                z[t] = np.tanh(z[t] + prev @ w_a + b_a) * (t < steps)[:, None]
            return z, None

        def rnn_backward_chain(self, d_a, d_a_n, a, w_a, steps, nonlinearity, chain_saved):
            dz, carry = np.empty_like(a), np.zeros_like(d_a_n)
            for t in reversed(range(len(a))):
                valid, last = (t < steps)[:, None], (t == steps - 1)[:, None]
                grad = np.where(valid, d_a[t], 0) + np.where(last, d_a_n, 0) + carry
                dz[t] = np.where(valid, grad * (1 - a[t] ** 2), 0)
                carry = dz[t] @ w_a.T
            return dz, carry
''')

BROKEN = "import this_module_does_not_exist_anywhere\n"

OLD_API = textwrap.dedent('''
    from rnnbackends import BackendSpec, hookimpl

    @hookimpl
    def rnnbackends_register_backends(register):
        register(BackendSpec("oldapi", 0, 50, "cpu", "oldapi_rnn:Backend"))
''')

MODULES = {"thirdparty_rnn": THIRD_PARTY, "chainonly_rnn": CHAIN_ONLY, "broken_rnn": BROKEN, "oldapi_rnn": OLD_API}
ENTRY_POINTS = {"thirdparty": "thirdparty_rnn", "chainonly": "chainonly_rnn", "broken": "broken_rnn",
                "oldapi": "oldapi_rnn"}


def write_project(root: Path) -> Path:
    """A pip-installable project declaring the four plugins in the ``rnnbackends`` entry-point group."""
    root.mkdir(parents=True, exist_ok=True)
    for module, source in MODULES.items():
        (root / f"{module}.py").write_text(source)
    eps = "\n".join(f'{name} = "{module}"' for name, module in ENTRY_POINTS.items())
    (root / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "throwaway-rnn-plugins"
        version = "1.2.3"

        [tool.setuptools]
        py-modules = {sorted(MODULES)!r}

        [project.entry-points.rnnbackends]
    ''') + eps + "\n")
    return root


def write_dist_info(site: Path, names=("thirdparty", "broken", "oldapi")) -> Path:
    """The same plugins as an installed distribution (modules + .dist-info) in ``site``, without pip."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / "throwaway_rnn_plugins-1.2.3.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-rnn-plugins\nVersion: 1.2.3\n")
    lines = [f"{name} = {ENTRY_POINTS[name]}" for name in names]
    (info / "entry_points.txt").write_text("[rnnbackends]\n" + "\n".join(lines) + "\n")
    for name in names:
        module = ENTRY_POINTS[name]
        (site / f"{module}.py").write_text(MODULES[module])
    return site
