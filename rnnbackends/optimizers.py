"""Optimisers that update parameter dicts in place, and gradient clipping by global norm and by value."""
from __future__ import annotations

import numpy as np

from .layers import array_module, to_host


def clip_grad_norm(grads, max_norm):
    """Scale all gradients together so their global L2 norm is at most ``max_norm``; returns the norm before."""
    total = float(np.sqrt(sum(float((g * g).sum()) for g in grads.values())))
    if total > max_norm:
        scale = max_norm / (total + 1e-12)
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

    def step(self, params, grads):
        """Update every ``params[name]`` in place from ``grads[name]``."""
        self.iterations += 1
        for name, param in params.items():
            slots = self.state.setdefault(name, {})
            self.update(param, grads[name], slots)

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


class SGD(Optimizer):
    """Stochastic gradient descent with (optionally Nesterov) momentum: v = μv - lr·g, θ += v."""

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False):
        super().__init__(lr)
        self.momentum, self.nesterov = momentum, nesterov

    def update(self, param, grad, slots):
        """One SGD step on ``param``."""
        if self.momentum == 0.0:
            param -= self.lr * grad
            return
        velocity = self.slot(slots, "velocity", param)
        velocity *= self.momentum
        velocity -= self.lr * grad
        param += self.momentum * velocity - self.lr * grad if self.nesterov else velocity


class Adagrad(Optimizer):
    """Adagrad: G += g², θ -= lr·g / (√G + ε)."""

    def __init__(self, lr=0.01, eps=1e-10):
        super().__init__(lr)
        self.eps = eps

    def update(self, param, grad, slots):
        """One Adagrad step on ``param``."""
        total = self.slot(slots, "sum_squares", param)
        total += grad * grad
        param -= self.lr * grad / (array_module(param).sqrt(total) + self.eps)


class RMSprop(Optimizer):
    """RMSprop: s = ρs + (1-ρ)g², θ -= lr·g / (√s + ε)."""

    def __init__(self, lr=0.001, rho=0.9, eps=1e-7):
        super().__init__(lr)
        self.rho, self.eps = rho, eps

    def update(self, param, grad, slots):
        """One RMSprop step on ``param``."""
        mean_square = self.slot(slots, "mean_square", param)
        mean_square *= self.rho
        mean_square += (1.0 - self.rho) * grad * grad
        param -= self.lr * grad / (array_module(param).sqrt(mean_square) + self.eps)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; ``weight_decay`` adds decoupled decay (AdamW)."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay

    def update(self, param, grad, slots):
        """One Adam step on ``param``."""
        m, v = self.slot(slots, "m", param), self.slot(slots, "v", param)
        m *= self.beta1
        m += (1.0 - self.beta1) * grad
        v *= self.beta2
        v += (1.0 - self.beta2) * grad * grad
        m_hat = m / (1.0 - self.beta1 ** self.iterations)
        v_hat = v / (1.0 - self.beta2 ** self.iterations)
        if self.weight_decay:
            param -= self.lr * self.weight_decay * param
        param -= self.lr * m_hat / (array_module(param).sqrt(v_hat) + self.eps)
