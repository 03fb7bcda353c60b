"""Optimisers that update parameter dicts in place, and gradient clipping by global norm and by value.

Updates run in place without temporaries: each parameter has one scratch array (kept out of the checkpointed
state) that the ``out=`` ufuncs write into. ``step(params, grads, scale)`` multiplies the gradients by ``scale``
on the way in, which is how clipping by global norm costs no pass of its own in ``fit``. Within
``computing_on(backend)`` Adam uses the backend's ``adam_update`` kernel when it offers one.
"""
from __future__ import annotations

import math

from .layers import active_kernel, array_module, to_host


def global_norm(grads):
    """The L2 norm of all gradients together, from one dot product per array (no squared copies)."""
    total = 0.0
    for g in grads.values():
        flat = g.reshape(-1)
        total += float(array_module(g).dot(flat, flat))
    return math.sqrt(total)


def clip_scale(norm, max_norm):
    """The factor that brings a global norm down to ``max_norm`` (1.0 when it is already within)."""
    return max_norm / (norm + 1e-12) if norm > max_norm else 1.0


def clip_grad_norm(grads, max_norm):
    """Scale all gradients together so their global L2 norm is at most ``max_norm``; returns the norm before."""
    total = global_norm(grads)
    scale = clip_scale(total, max_norm)
    if scale != 1.0:
        for g in grads.values():
            g *= scale
    return total


def clip_grad_value(grads, clip_value):
    """Clip every gradient entry to [-clip_value, clip_value]."""
    for g in grads.values():
        array_module(g).clip(g, -clip_value, clip_value, out=g)


class Optimizer:
    """Base class: per-parameter state by name, the step count, and a host copy of both for checkpoints."""

    def __init__(self, lr):
        self.lr = lr
        self.iterations = 0
        self.state = {}                                               # name -> {slot: array}
        self.scratch = {}                                             # name -> one temporary, never saved

    def step(self, params, grads, scale=1.0):
        """Update every ``params[name]`` in place from ``scale · grads[name]``."""
        self.iterations += 1
        for name, param in params.items():
            slots = self.state.setdefault(name, {})
            scratch = self.scratch.get(name)
            if scratch is None or scratch.shape != param.shape or scratch.dtype != param.dtype:
                scratch = self.scratch[name] = array_module(param).empty_like(param)
            self.update(param, grads[name], slots, scratch, scale)

    def slot(self, slots, key, like):
        """The state array ``key`` of one parameter, zeros at first."""
        if key not in slots:
            slots[key] = array_module(like).zeros_like(like)
        return slots[key]

    def state_dict(self):
        """Host arrays and the step count, for a checkpoint."""
        arrays = {f"{name}/{key}": to_host(value) for name, slots in self.state.items() for key, value in slots.items()}
        return {"iterations": self.iterations, "arrays": arrays}

    def load_state_dict(self, state, xp):
        """Restore what ``state_dict`` returned, as arrays of ``xp``."""
        self.iterations = int(state["iterations"])
        self.state = {}
        for path, value in state["arrays"].items():
            name, key = path.rsplit("/", 1)
            self.state.setdefault(name, {})[key] = xp.asarray(value)


def _scaled(xp, grad, factor, out):
    """out = factor · grad (no new array)."""
    return xp.multiply(grad, factor, out=out)


class SGD(Optimizer):
    """Stochastic gradient descent with (optionally Nesterov) momentum: v = μv - lr·g, θ += v."""

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False):
        super().__init__(lr)
        self.momentum, self.nesterov = momentum, nesterov

    def update(self, param, grad, slots, scratch, scale=1.0):
        """One SGD step on ``param``."""
        xp = array_module(param)
        step = _scaled(xp, grad, self.lr * scale, scratch)                      # lr·g
        if self.momentum == 0.0:
            param -= step
            return
        velocity = self.slot(slots, "velocity", param)
        velocity *= self.momentum
        velocity -= step
        if not self.nesterov:
            param += velocity
            return
        param -= step                                                           # θ += μv - lr·g
        param += _scaled(xp, velocity, self.momentum, scratch)


class Adagrad(Optimizer):
    """Adagrad: G += g², θ -= lr·g / (√G + ε)."""

    def __init__(self, lr=0.01, eps=1e-10):
        super().__init__(lr)
        self.eps = eps

    def update(self, param, grad, slots, scratch, scale=1.0):
        """One Adagrad step on ``param``."""
        xp = array_module(param)
        total = self.slot(slots, "sum_squares", param)
        g = _scaled(xp, grad, scale, scratch)
        g *= g
        total += g                                                              # G += g²
        _descend(xp, param, grad, total, self.lr * scale, self.eps, scratch)


class RMSprop(Optimizer):
    """RMSprop: s = ρs + (1-ρ)g², θ -= lr·g / (√s + ε)."""

    def __init__(self, lr=0.001, rho=0.9, eps=1e-7):
        super().__init__(lr)
        self.rho, self.eps = rho, eps

    def update(self, param, grad, slots, scratch, scale=1.0):
        """One RMSprop step on ``param``."""
        xp = array_module(param)
        mean_square = self.slot(slots, "mean_square", param)
        mean_square *= self.rho
        g = _scaled(xp, grad, scale, scratch)
        g *= g
        g *= 1.0 - self.rho
        mean_square += g                                                        # s = ρs + (1-ρ)g²
        _descend(xp, param, grad, mean_square, self.lr * scale, self.eps, scratch)


def _descend(xp, param, numerator, squares, step, eps, scratch):
    """θ -= step · numerator / (√squares + eps), through ``scratch``."""
    denominator = xp.sqrt(squares, out=scratch)
    denominator += eps
    xp.divide(numerator, denominator, out=denominator)
    denominator *= step
    param -= denominator


def adam_update(param, grad, m, v, scratch, lr_t, beta1, beta2, eps_t, scale, decay):
    """One Adam step in place, g = scale·grad: m = β1m + (1-β1)g, v = β2v + (1-β2)g², θ = decay·θ - lr_t·m/(√v + ε_t).

    lr_t = lr·√(1-β2^t)/(1-β1^t) and ε_t = ε·√(1-β2^t) fold the bias corrections in; decay = 1 - lr·weight_decay.
    """
    xp = array_module(param)
    g = _scaled(xp, grad, (1.0 - beta1) * scale, scratch)
    m *= beta1
    m += g                                                                      # m = β1m + (1-β1)g
    g = _scaled(xp, grad, scale, scratch)
    g *= g
    g *= 1.0 - beta2
    v *= beta2
    v += g                                                                      # v = β2v + (1-β2)g²
    if decay != 1.0:
        param *= decay
    _descend(xp, param, m, v, lr_t, eps_t, scratch)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; ``weight_decay`` adds decoupled decay (AdamW)."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay

    def update(self, param, grad, slots, scratch, scale=1.0):
        """One Adam step on ``param`` (the backend's ``adam_update`` kernel within ``computing_on``)."""
        m, v = self.slot(slots, "m", param), self.slot(slots, "v", param)
        corrected = math.sqrt(1.0 - self.beta2 ** self.iterations)
        update = active_kernel("adam_update", array_module(param)) or adam_update
        update(param, grad, m, v, scratch, self.lr * corrected / (1.0 - self.beta1 ** self.iterations), self.beta1,
               self.beta2, self.eps * corrected, scale, 1.0 - self.lr * self.weight_decay)
