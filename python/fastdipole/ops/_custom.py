"""Python side of the compiled ``torch.ops.fastdipole`` operators.

Importing this module (done lazily by :mod:`fastdipole.ops`) loads ``fastdipole._C`` (the C++ schemas and
CPU/CUDA kernels) and adds, per operator:

* a fake (meta) implementation, so ``torch.compile(fullgraph=True)`` and ``torch.export`` can trace the
  ops; ``neighbor_pairs`` has a data-dependent number of pairs, declared with ``new_dynamic_size()``;
* autograd. ``gaussian_envsum`` differentiates through the ``gaussian_envsum_backward`` kernel (gradients for
  z, r, mu and sigma; its ``output_mask`` asks only for those autograd needs, the rest come back None).
  Double backward also works: the backward op's own derivative is computed from the
  pure-PyTorch reference formulas (correct, but it materialises (n_pairs, n_sens, n_features) terms; fine
  for tests and small batches, not tuned for force training). ``segmented_dipole`` is bilinear, so its
  backward's derivatives are the ops themselves (any order). ``neighbor_pairs`` returns integer indices
  and is not differentiable: compute distances from R in PyTorch (``reference.pair_distances``) so
  position gradients flow.

The wrappers below make inputs contiguous and flat where the schemas need it. Units: Angstrom, e,
e*Angstrom.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import reference
from ._loader import extension_available, extension_error

if not extension_available():  # pragma: no cover - exercised only without a build
    raise ImportError(f"fastdipole C++ extension is not available: {extension_error()}")

_ops = torch.ops.fastdipole


# ---------------------------------------------------------------------------------------------------------
# Python entry points
# ---------------------------------------------------------------------------------------------------------
def neighbor_pairs(R: Tensor, offsets: Tensor, cutoff: float) -> tuple[Tensor, Tensor, Tensor]:
    """(pair_first, pair_second, row_offsets), int64: pairs i != j of a molecule with r < cutoff (Angstrom)."""
    return _ops.neighbor_pairs(R.detach().contiguous(), offsets.contiguous(), float(cutoff))


def gaussian_envsum(
    z: Tensor,
    r: Tensor,
    pair_first: Tensor,
    pair_second: Tensor,
    row_offsets: Tensor,
    mu: Tensor,
    sigma: Tensor,
    cutoff: float,
) -> Tensor:
    """Interaction environment (n_atoms, n_sens, n_features) with sensitivities computed in the kernel."""
    return _ops.gaussian_envsum(
        z.contiguous(),
        r.contiguous(),
        pair_first.contiguous(),
        pair_second.contiguous(),
        row_offsets.contiguous(),
        mu.reshape(-1).contiguous(),
        sigma.reshape(-1).contiguous(),
        float(cutoff),
    )


def segmented_dipole(q: Tensor, R: Tensor, offsets: Tensor) -> Tensor:
    """Dipole vectors (n_molecules, 3) in e*Angstrom."""
    return _ops.segmented_dipole(q.reshape(-1).contiguous(), R.contiguous(), offsets.contiguous())


# ---------------------------------------------------------------------------------------------------------
# Fake implementations (shapes and dtypes only)
# ---------------------------------------------------------------------------------------------------------
@torch.library.register_fake("fastdipole::neighbor_pairs")
def _neighbor_pairs_fake(R: Tensor, offsets: Tensor, cutoff: float):
    torch._check(R.dim() == 2 and R.shape[1] == 3, lambda: f"R must have shape (n_atoms, 3), got {tuple(R.shape)}")
    n_pairs = torch.library.get_ctx().new_dynamic_size()
    first = R.new_empty((n_pairs,), dtype=torch.int64)
    second = R.new_empty((n_pairs,), dtype=torch.int64)
    row_offsets = R.new_empty((R.shape[0] + 1,), dtype=torch.int64)
    return first, second, row_offsets


@torch.library.register_fake("fastdipole::gaussian_envsum")
def _gaussian_envsum_fake(z, r, pair_first, pair_second, row_offsets, mu, sigma, cutoff):
    torch._check(z.dim() == 2, lambda: f"z must be (n_atoms, n_features), got {tuple(z.shape)}")
    torch._check(mu.dim() == 1 and sigma.dim() == 1, lambda: "mu and sigma must be 1-D")
    return z.new_empty((z.shape[0], mu.shape[0], z.shape[1]))


_ALL_ENVSUM_GRADS = (True, True, True, True)


@torch.library.register_fake("fastdipole::gaussian_envsum_backward")
def _gaussian_envsum_backward_fake(
    grad_env, z, r, pair_first, pair_second, row_offsets, mu, sigma, cutoff, output_mask=_ALL_ENVSUM_GRADS
):
    like = (z, r, mu, sigma)
    return tuple(torch.empty_like(t) if wanted else None for t, wanted in zip(like, output_mask))


@torch.library.register_fake("fastdipole::segmented_dipole")
def _segmented_dipole_fake(q, R, offsets):
    return R.new_empty((offsets.shape[0] - 1, 3))


@torch.library.register_fake("fastdipole::segmented_dipole_backward")
def _segmented_dipole_backward_fake(grad_mu, q, R, offsets):
    return torch.empty_like(q), torch.empty_like(R)


# ---------------------------------------------------------------------------------------------------------
# Autograd
# ---------------------------------------------------------------------------------------------------------
def _envsum_setup_context(ctx, inputs, output):
    z, r, pair_first, pair_second, row_offsets, mu, sigma, cutoff = inputs
    ctx.save_for_backward(z, r, pair_first, pair_second, row_offsets, mu, sigma)
    ctx.cutoff = cutoff


def _envsum_backward(ctx, grad_env):
    z, r, pair_first, pair_second, row_offsets, mu, sigma = ctx.saved_tensors
    # Only the gradients autograd needs: in training positions (r) need none, and a one-hot first-layer
    # input (z) none either; the kernel then skips featsum / the r accumulation (None comes back).
    needs = ctx.needs_input_grad
    output_mask = [bool(needs[0]), bool(needs[1]), bool(needs[5]), bool(needs[6])]
    grad_z, grad_r, grad_mu, grad_sigma = _ops.gaussian_envsum_backward(
        grad_env.contiguous(), z, r, pair_first, pair_second, row_offsets, mu, sigma, ctx.cutoff, output_mask
    )
    return grad_z, grad_r, None, None, None, grad_mu, grad_sigma, None


torch.library.register_autograd(
    "fastdipole::gaussian_envsum", _envsum_backward, setup_context=_envsum_setup_context
)


def _envsum_backward_setup_context(ctx, inputs, output):
    grad_env, z, r, pair_first, pair_second, row_offsets, mu, sigma, cutoff = inputs[:9]
    ctx.save_for_backward(grad_env, z, r, pair_first, pair_second, row_offsets, mu, sigma)
    ctx.cutoff = cutoff
    ctx.output_mask = tuple(inputs[9]) if len(inputs) > 9 else _ALL_ENVSUM_GRADS


def _envsum_double_backward(ctx, gg_z, gg_r, gg_mu, gg_sigma):
    """Derivative of the backward op, from the reference formulas (autograd through autograd)."""
    grad_env, z, r, pair_first, pair_second, row_offsets, mu, sigma = ctx.saved_tensors
    # Outputs the mask left out were never computed: nothing flows back through them.
    ggs = [g if wanted else None for g, wanted in zip((gg_z, gg_r, gg_mu, gg_sigma), ctx.output_mask)]
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in (grad_env, z, r, mu, sigma)]
        g_env, z_, r_, mu_, sigma_ = leaves
        env = reference.gaussian_envsum(z_, r_, pair_first, pair_second, row_offsets, mu_, sigma_, ctx.cutoff)
        firsts = torch.autograd.grad(env, (z_, r_, mu_, sigma_), g_env, create_graph=True)
        outs = [f for f, g in zip(firsts, ggs) if g is not None]
        grads_out = [g for g in ggs if g is not None]
        if not outs:
            return (None,) * 10
        d_env, d_z, d_r, d_mu, d_sigma = torch.autograd.grad(outs, leaves, grads_out, allow_unused=True)
    return d_env, d_z, d_r, None, None, None, d_mu, d_sigma, None, None


torch.library.register_autograd(
    "fastdipole::gaussian_envsum_backward", _envsum_double_backward, setup_context=_envsum_backward_setup_context
)


def _dipole_setup_context(ctx, inputs, output):
    q, R, offsets = inputs
    ctx.save_for_backward(q, R, offsets)


def _dipole_backward(ctx, grad_mu):
    q, R, offsets = ctx.saved_tensors
    grad_q, grad_R = _ops.segmented_dipole_backward(grad_mu.contiguous(), q, R, offsets)
    return grad_q, grad_R, None


torch.library.register_autograd("fastdipole::segmented_dipole", _dipole_backward, setup_context=_dipole_setup_context)


def _dipole_backward_setup_context(ctx, inputs, output):
    grad_mu, q, R, offsets = inputs
    ctx.save_for_backward(grad_mu, q, R, offsets)


def _dipole_double_backward(ctx, gg_q, gg_R):
    """The backward is bilinear in (grad_mu, q) and (grad_mu, R): its derivatives are the ops again."""
    grad_mu, q, R, offsets = ctx.saved_tensors
    d_grad_mu = torch.zeros_like(grad_mu)
    d_q = d_R = None
    if gg_q is not None:  # grad_q[i] = grad_mu[m] . R_i
        d_grad_mu = d_grad_mu + _ops.segmented_dipole(gg_q.contiguous(), R, offsets)
        d_R = _ops.segmented_dipole_backward(grad_mu, gg_q.contiguous(), R, offsets)[1]
    if gg_R is not None:  # grad_R[i] = grad_mu[m] q_i
        d_grad_mu = d_grad_mu + _ops.segmented_dipole(q, gg_R.contiguous(), offsets)
        d_q = _ops.segmented_dipole_backward(grad_mu, q, gg_R.contiguous(), offsets)[0]
    return d_grad_mu, d_q, d_R, None


torch.library.register_autograd(
    "fastdipole::segmented_dipole_backward", _dipole_double_backward, setup_context=_dipole_backward_setup_context
)


__all__ = ["neighbor_pairs", "gaussian_envsum", "segmented_dipole"]
