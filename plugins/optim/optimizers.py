"""Optimizer factories: ``factory(params=..., **recipe_table)`` -> ``torch.optim.Optimizer``.

Each builds exactly the torch optimizer with the recipe's hyperparameters, nothing more,
so a run with ``adam`` is bit-identical to one built by hand with ``torch.optim.Adam``.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from gantool import ParamError, Range

Beta = Annotated[float, Range(ge=0, lt=1)]


def _finite(**values: float):
    """Range(gt=0) lets ``inf`` (valid TOML) through; an infinite step size is never meant."""
    for name, value in values.items():
        if not math.isfinite(value):
            raise ParamError(name, f"must be finite, got {value!r}")


def _fused(params: list) -> bool | None:
    """Fused kernels are CUDA-only; ``None`` keeps torch's default (foreach) elsewhere."""
    return True if params and all(p.is_cuda for p in params) else None


def adam(
    params,
    *,
    lr: Annotated[float, Range(gt=0)] = 2e-4,
    betas: tuple[Beta, Beta] = (0.5, 0.999),
    weight_decay: Annotated[float, Range(ge=0)] = 0.0,
    eps: Annotated[float, Range(gt=0)] = 1e-8,
) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2014): the default for most GANs; beta1 = 0.5 as in DCGAN (Radford et al. 2015).

    Args:
        lr: Learning rate (2e-4 as in DCGAN; 1e-4 is common for WGAN-GP with betas (0, 0.9)).
        betas: Decay rates of the first and second moment estimates.
        weight_decay: L2 penalty added to the gradient (coupled; use ``adamw`` for decoupled decay).
        eps: Added to the denominator for numerical stability.
    """
    _finite(lr=lr, weight_decay=weight_decay)
    params = list(params)
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=_fused(params))


def adamw(
    params,
    *,
    lr: Annotated[float, Range(gt=0)] = 2e-4,
    betas: tuple[Beta, Beta] = (0.5, 0.999),
    weight_decay: Annotated[float, Range(ge=0)] = 0.01,
    eps: Annotated[float, Range(gt=0)] = 1e-8,
) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter 2019): Adam with weight decay decoupled from the gradient statistics.

    Args:
        lr: Learning rate.
        betas: Decay rates of the first and second moment estimates.
        weight_decay: Decoupled weight decay: each step multiplies weights by ``1 - lr * weight_decay``.
        eps: Added to the denominator for numerical stability.
    """
    _finite(lr=lr, weight_decay=weight_decay)
    params = list(params)
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=_fused(params))


def rmsprop(
    params,
    *,
    lr: Annotated[float, Range(gt=0)] = 5e-5,
    alpha: Annotated[float, Range(ge=0, lt=1)] = 0.99,
    eps: Annotated[float, Range(gt=0)] = 1e-8,
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.0,
    weight_decay: Annotated[float, Range(ge=0)] = 0.0,
) -> torch.optim.Optimizer:
    """RMSprop (Tieleman & Hinton 2012): the WGAN optimizer (Arjovsky et al. 2017), lr 5e-5, no momentum.

    WGAN with weight clipping is unstable with momentum-based optimizers such as Adam.

    Args:
        lr: Learning rate (5e-5 as in WGAN).
        alpha: Smoothing constant of the squared-gradient average.
        eps: Added to the denominator for numerical stability.
        momentum: Momentum factor (0 = none, as in WGAN).
        weight_decay: L2 penalty added to the gradient.
    """
    _finite(lr=lr, weight_decay=weight_decay)
    return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay)


def sgd(
    params,
    *,
    lr: Annotated[float, Range(gt=0)] = 0.01,
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.0,
    nesterov: bool = False,
    weight_decay: Annotated[float, Range(ge=0)] = 0.0,
) -> torch.optim.Optimizer:
    """Plain SGD: a baseline for ablations; GANs rarely train well with it.

    Args:
        lr: Learning rate.
        momentum: Momentum factor (0 = none).
        nesterov: Use Nesterov momentum (Sutskever et al. 2013); needs momentum > 0.
        weight_decay: L2 penalty added to the gradient.
    """
    _finite(lr=lr, weight_decay=weight_decay)
    if nesterov and momentum <= 0:
        raise ParamError("nesterov", "needs momentum > 0")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
