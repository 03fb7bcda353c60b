"""The CPU suite's peers: native PyTorch, JAX and ONNX Runtime on the same cell, weights and gradients.

torch: torch.nn.RNN/GRU/LSTM (inference forward; autograd forward+backward). JAX: ``jax.jit`` of a ``lax.scan``
over the steps (forward) and of ``jax.vjp`` through it into every input (forward+backward). ONNX Runtime: one
RNN, GRU or LSTM node built with ``onnx.helper`` (weights as initializers, ``sequence_lens`` given), forward only.
All follow PyTorch's equations: GRU's reset gate multiplies the recurrent product (ONNX ``linear_before_reset=1``);
ONNX orders the gates i, o, f, c (LSTM) and z, r, h (GRU) where PyTorch and rnnbackends use i, f, g, o and r, z, n,
so the weights are reordered (with rnnbackends.onnx_export's gate order). JAX and ONNX Runtime are optional
(``pip install -e '.[perf]'``): a missing one is skipped and named. Before a peer is timed, ``disagreement``
compares what it computes with rnnbackends.reference.
"""
from __future__ import annotations

import importlib.metadata
import os

import numpy as np

PEERS = ("torch", "jax", "onnxruntime")
FORWARD_ONLY = frozenset({"onnxruntime"})        # ONNX Runtime has no backward of its RNN ops
TOLERANCE = 2e-3      # largest |peer − reference| over largest |reference|, per output (float32 against float64)
DISTRIBUTIONS = {"torch": ("torch",), "jax": ("jax",), "onnxruntime": ("onnxruntime", "onnx")}   # what each needs


def installed(name):
    """The installed version of a peer's package when everything it needs is installed, else None."""
    try:
        return [importlib.metadata.version(d) for d in DISTRIBUTIONS[name]][0]
    except importlib.metadata.PackageNotFoundError:
        return None


def pin_jax_threads(threads):
    """XLA's CPU thread pool to one thread when threads == 1 (XLA_FLAGS, read when JAX first starts its CPU
    client); XLA has no other thread-count setting, so above one thread JAX uses every core. Returns what JAX
    will use, for the results."""
    import sys
    if threads == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        if "jax" in sys.modules and _jax_started():
            return "all cores (JAX had started before --threads 1 could pin it)"
        if flags not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
        return 1
    return f"all cores ({os.cpu_count()})"


def _jax_started():
    """Whether JAX has created its backends (after which XLA_FLAGS is no longer read)."""
    from jax._src import xla_bridge
    return bool(getattr(xla_bridge, "_backends", None))


# -- the peers' passes ------------------------------------------------------------------------------

def torch_passes(p, device="cpu", cell="rnn"):
    """(forward, forward+backward) closures of native torch.nn.RNN/GRU/LSTM on device, same weights and gradients
    as p (PyTorch's CPU LSTM runs through oneDNN where it can); forward returns (out, state_n), forward+backward
    the gradients {name: tensor} in the order of backward_sequence's."""
    import torch
    D, H = p["x"].shape[2], p["a0"].shape[1]
    module = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](D, H)
    module = module.to(device=device, dtype=getattr(torch, str(p["x"].dtype)))
    b_r = p.get("b_r", 0 * p["b_a"])                                           # the simple cell: b_A holds it all
    params = {"weight_ih_l0": p["w_x"].T, "weight_hh_l0": p["w_a"].T, "bias_ih_l0": p["b_a"], "bias_hh_l0": b_r}
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
    x = torch.from_numpy(p["x"]).to(device).requires_grad_()
    states = [torch.from_numpy(p[k][None]).to(device).requires_grad_() for k in ("a0", "c0") if k in p]
    d_out = torch.from_numpy(p["d_a"]).to(device)
    d_states = [torch.from_numpy(p[k][None]).to(device) for k in ("d_a_n", "d_c_n") if k in p]
    state0 = tuple(states) if cell == "lstm" else states[0]

    def forward():
        """torch's inference forward."""
        with torch.no_grad():
            return module(x, state0)

    def forward_backward():
        """torch's forward then autograd backward into x, the initial states and every weight."""
        module.zero_grad(set_to_none=True)
        x.grad = None
        for s in states:
            s.grad = None
        out, state_n = module(x, state0)
        state_n = list(state_n) if cell == "lstm" else [state_n]
        torch.autograd.backward([out] + state_n, [d_out] + d_states)
        grads = {"d_x": x.grad, "d_a0": states[0].grad[0], "d_w_x": module.weight_ih_l0.grad.T,
                 "d_w_a": module.weight_hh_l0.grad.T, "d_b_a": module.bias_ih_l0.grad,
                 "d_b_r": module.bias_hh_l0.grad}
        if cell == "lstm":
            grads["d_c0"] = states[1].grad[0]
        return grads
    return forward, forward_backward


def jax_passes(p, cell="rnn"):
    """(forward, forward+backward) closures of JAX: jit of a lax.scan over the steps, and jit of jax.vjp through it
    with p's output gradients; forward returns (a, state_n), forward+backward the gradients by name."""
    import jax
    import jax.numpy as jnp

    H = p["a0"].shape[1]
    sigmoid = jax.nn.sigmoid

    def step(w_a, b_r, z_t, state):
        """One step of the cell: Z_t = X_t·W_X + b_A arrives precomputed (B, G·H)."""
        if cell == "rnn":
            a = jnp.tanh(z_t + state @ w_a)                                   # b_R folded into b_A
            return a, a
        if cell == "gru":
            z_r = state @ w_a + b_r                                           # A_{t-1}·W_A + b_R (B, 3H)
            r = sigmoid(z_t[:, :H] + z_r[:, :H])
            u = sigmoid(z_t[:, H:2 * H] + z_r[:, H:2 * H])
            n = jnp.tanh(z_t[:, 2 * H:] + r * z_r[:, 2 * H:])
            a = (1 - u) * n + u * state
            return a, a
        a_prev, c_prev = state
        pre = z_t + a_prev @ w_a + b_r                                        # (B, 4H): i, f, g, o
        i, f, o = sigmoid(pre[:, :H]), sigmoid(pre[:, H:2 * H]), sigmoid(pre[:, 3 * H:])
        c = f * c_prev + i * jnp.tanh(pre[:, 2 * H:3 * H])
        a = o * jnp.tanh(c)
        return (a, c), a

    def chain(x, state0, w_x, w_a, b_a, b_r):
        """(a (T, B, H), state_n) of the whole sequence."""
        z = x @ w_x + b_a                                                     # X_t·W_X + b_A, all steps
        state_n, a = jax.lax.scan(lambda s, z_t: step(w_a, b_r, z_t, s), state0, z)
        return a, state_n

    b_r = p["b_r"] if cell != "rnn" else np.zeros_like(p["b_a"])
    state0 = (p["a0"], p["c0"]) if cell == "lstm" else p["a0"]
    d_state_n = (p["d_a_n"], p["d_c_n"]) if cell == "lstm" else p["d_a_n"]
    args = jax.device_put((p["x"], state0, p["w_x"], p["w_a"], p["b_a"], b_r))
    cotangent = jax.device_put((p["d_a"], d_state_n))
    forward_jit = jax.jit(chain)
    gradients_jit = jax.jit(lambda args, cotangent: jax.vjp(chain, *args)[1](cotangent))

    def forward():
        """JAX's jitted scan."""
        return jax.block_until_ready(forward_jit(*args))

    def forward_backward():
        """JAX's jitted forward and vjp into every input."""
        d_x, d_state0, d_w_x, d_w_a, d_b_a, d_b_r = jax.block_until_ready(gradients_jit(args, cotangent))
        grads = {"d_x": d_x, "d_w_x": d_w_x, "d_w_a": d_w_a, "d_b_a": d_b_a, "d_b_r": d_b_r}
        if cell == "lstm":
            grads["d_a0"], grads["d_c0"] = d_state0
        else:
            grads["d_a0"] = d_state0
        if cell == "rnn":
            grads["d_b_r"] = d_b_a                                          # one bias: b_A and b_R are one
        return grads
    return forward, forward_backward


def onnx_model(p, cell="rnn"):
    """An ONNX model of one RNN/GRU/LSTM node with p's weights: inputs X (T, B, D), sequence_lens (B,),
    initial_h (1, B, H) (and initial_c for LSTM); outputs Y (T, 1, B, H), Y_h (and Y_c)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from rnnbackends.onnx_export import GATE_ORDER, IR_VERSION, OPERATOR, OPSET, gate_blocks
    T, B, D = p["x"].shape
    H = p["a0"].shape[1]
    dtype = {np.dtype("float32"): TensorProto.FLOAT, np.dtype("float64"): TensorProto.DOUBLE}[p["x"].dtype]
    b_r = p.get("b_r", np.zeros_like(p["b_a"]))
    order = GATE_ORDER[cell]                                                  # ours -> ONNX's gate order
    weights = {"W": gate_blocks(p["w_x"], order, H).T[None],                  # (1, G·H, D)
               "R": gate_blocks(p["w_a"], order, H).T[None],                  # (1, G·H, H)
               "B": np.concatenate([gate_blocks(p["b_a"], order, H), gate_blocks(b_r, order, H)])[None]}  # (1, 2·G·H)
    inputs = [helper.make_tensor_value_info("X", dtype, [T, B, D]),
              helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]),
              helper.make_tensor_value_info("initial_h", dtype, [1, B, H])]
    outputs = [helper.make_tensor_value_info("Y", dtype, [T, 1, B, H]),
               helper.make_tensor_value_info("Y_h", dtype, [1, B, H])]
    if cell == "lstm":
        inputs.append(helper.make_tensor_value_info("initial_c", dtype, [1, B, H]))
        outputs.append(helper.make_tensor_value_info("Y_c", dtype, [1, B, H]))
    attributes = {"hidden_size": H, **({"linear_before_reset": 1} if cell == "gru" else {})}
    node = helper.make_node(OPERATOR[cell],
                            ["X", "W", "R", "B", "sequence_lens", "initial_h"] + ["initial_c"] * (cell == "lstm"),
                            [o.name for o in outputs], **attributes)
    graph = helper.make_graph([node], f"{cell}_forward", inputs, outputs,
                              [numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def onnxruntime_passes(p, cell="rnn", threads=1):
    """(forward, None): an ONNX Runtime session of onnx_model on threads intra-op threads (one inter-op);
    forward returns (Y, Y_h[, Y_c])."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    session = onnxruntime.InferenceSession(onnx_model(p, cell).SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    T, B, _ = p["x"].shape
    feeds = {"X": p["x"], "sequence_lens": np.full(B, T, dtype=np.int32), "initial_h": p["a0"][None]}
    if cell == "lstm":
        feeds["initial_c"] = p["c0"][None]

    def forward():
        """ONNX Runtime's forward."""
        return session.run(None, feeds)
    return forward, None


def passes(name, p, cell, threads):
    """(forward, forward+backward or None) of the named peer."""
    if name == "torch":
        return torch_passes(p, cell=cell)
    if name == "jax":
        return jax_passes(p, cell)
    return onnxruntime_passes(p, cell, threads)


# -- correctness against the reference ----------------------------------------------------------------

def outputs(name, fns, cell):
    """What a peer computes, as NumPy arrays named as in the contract: a, a_n (and c_n), and from forward+backward
    d_x, d_a0 (d_c0), d_w_x, d_w_a, d_b_a, d_b_r."""
    forward, forward_backward = fns
    result = forward()
    if name == "torch":
        out, state_n = result
        result = (out, tuple(s[0] for s in state_n) if cell == "lstm" else state_n[0])
    elif name == "onnxruntime":
        y, *states = result
        result = (y[:, 0], tuple(s[0] for s in states) if cell == "lstm" else states[0][0])
    a, state_n = result
    got = {"a": a}
    got.update(zip(("a_n", "c_n"), state_n) if cell == "lstm" else {"a_n": state_n})
    if forward_backward is not None:
        got.update(forward_backward())
    return {k: _numpy(v) for k, v in got.items()}


def _numpy(value):
    """A torch tensor, JAX array or NumPy array as a NumPy array."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def reference_outputs(p, cell):
    """The same outputs from rnnbackends' NumPy reference, computed in float64."""
    import rnnbackends
    reference = rnnbackends.get_backend("numpy")
    q = {k: v.astype(np.float64) for k, v in p.items()}
    state0 = (q["a0"], q["c0"]) if cell == "lstm" else q["a0"]
    d_state_n = (q["d_a_n"], q["d_c_n"]) if cell == "lstm" else q["d_a_n"]
    options = {} if cell == "rnn" else {"cell": cell, "b_r": q["b_r"]}
    a, state_n, saved = reference.forward_sequence(q["x"], state0, q["w_x"], q["w_a"], q["b_a"], **options)
    d_x, d_state0, d_w_x, d_w_a, d_b_a, d_b_r = reference.backward_sequence(saved, q["d_a"], d_state_n)
    out = {"a": a, "d_x": d_x, "d_w_x": d_w_x, "d_w_a": d_w_a, "d_b_a": d_b_a, "d_b_r": d_b_r}
    out.update(zip(("a_n", "c_n"), state_n) if cell == "lstm" else {"a_n": state_n})
    out.update(zip(("d_a0", "d_c0"), d_state0) if cell == "lstm" else {"d_a0": d_state0})
    return out


def disagreement(got, reference):
    """{output: largest |got − reference| over largest |reference|} for every output the peer computed."""
    errors = {}
    for key, value in got.items():
        want = reference[key]
        if value.shape != want.shape:
            raise ValueError(f"{key}: shape {value.shape}, the reference's is {want.shape}")
        errors[key] = float(np.max(np.abs(value - want)) / max(float(np.max(np.abs(want))), 1e-12))
    return errors
