"""The fastdipole operators, one section per op: its public function, its fake (meta) implementation and its
autograd, side by side (the layout of pytorch/extension-cpp's ``ops.py``).

Each public function takes ``backend`` (one of :data:`BACKENDS`): ``"compiled"`` runs the C++/CUDA kernels
registered by ``fastdipole._C`` as ``torch.ops.fastdipole.*`` (schemas and kernels in ``csrc/``),
``"reference"`` the pure-PyTorch references of :mod:`fastdipole.ops.reference`, ``"auto"`` the compiled ones
when the extension is built. Models resolve it once when they are built (:func:`resolve_backend`). This is the
one place that flattens inputs and makes them contiguous for the schemas.

Which CUDA kernels run is chosen per problem by the plan in ``csrc/cuda/kernel_plan.h``
(:mod:`fastdipole.ops.kernels` shows it); ``gaussian_envsum(..., kernel=...)`` and ``neighbor_pairs(...,
cell_list_min_atoms=...)`` override it for tests and benchmarks, as op arguments (the envsum ops'
``kernel_choice``; their autograd hands it to the backward op, so both passes follow the same choice). The CPU
kernels check these arguments and ignore them.

Fakes let ``torch.compile(fullgraph=True)`` and ``torch.export`` trace the ops (``neighbor_pairs`` has a
data-dependent number of pairs, declared with ``new_dynamic_size()``). Autograd: ``gaussian_envsum``
differentiates through the ``gaussian_envsum_backward`` kernel (gradients for z, r, mu and sigma; its
``output_mask`` asks only for those autograd needs); the backward's own derivative (double backward) comes from
the reference formulas (correct, but it materialises (n_pairs, n_sens, n_features) terms: fine for tests and
small batches). ``segmented_dipole`` is bilinear, so its backward's derivatives are the ops themselves.
``neighbor_pairs`` returns integer indices and is not differentiable: distances come from R in PyTorch
(:func:`fastdipole.ops.pair_distances`) so position gradients flow.

Units: Angstrom, e, e*Angstrom.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from . import reference
from ._loader import extension_available, extension_error

#: Backend choices, the same name and values everywhere (TrainConfig, models, every command's ``--backend``).
BACKENDS = ("auto", "compiled", "reference")


def resolve_backend(backend: str = "auto") -> str:
    """``"compiled"`` or ``"reference"``: ``auto`` picks the compiled kernels when the extension is built."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown fastdipole backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return "compiled" if extension_available() else "reference"
    if backend == "compiled" and not extension_available():
        raise RuntimeError(f"fastdipole's compiled kernels were asked for but the C++ extension is not available: "
                           f"{extension_error()}")
    return backend


def _compiled(backend: str) -> bool:
    return resolve_backend(backend) == "compiled"


class Pairs(NamedTuple):
    """Directed neighbour pairs sorted by receiving atom, with their CSR row offsets (all int64)."""

    first: Tensor
    second: Tensor
    row_offsets: Tensor


# ---- neighbor_pairs ---------------------------------------------------------------------------------------


def neighbor_pairs(R: Tensor, offsets: Tensor, cutoff: float, backend: str = "auto",
                   cell_list_min_atoms: int | None = None) -> Pairs:
    """Directed pairs (i, j), i != j, of one molecule with ``|R_j - R_i| < cutoff`` (Angstrom), sorted by i then j.

    ``cell_list_min_atoms``: molecules of at least this many atoms take the CUDA kernel's cell list (None: the
    op's default, ``fastdipole._C.default_cell_list_min_atoms``); the same pairs either way."""
    if _compiled(backend):
        args = (R.detach().contiguous(), offsets.contiguous(), float(cutoff))
        if cell_list_min_atoms is not None:
            args += (int(cell_list_min_atoms),)
        return Pairs(*torch.ops.fastdipole.neighbor_pairs(*args))
    return Pairs(*reference.neighbor_pairs(R, offsets, float(cutoff)))


# ---- gaussian_envsum --------------------------------------------------------------------------------------


def gaussian_envsum(z: Tensor, r: Tensor, pairs: Pairs, mu: Tensor, sigma: Tensor, cutoff: float,
                    backend: str = "auto", kernel: str = "auto") -> Tensor:
    """Environment tensor (n_atoms, n_sens, n_features) of the HIP-NN interaction, sensitivities from ``r``.

    ``env[i, v, f] = sum_{p: first(p) = i} s_v(r_p) z[second(p), f]``; ``mu``, ``sigma`` of shape (n_sens,) or
    (1, n_sens), Angstrom. ``kernel``: the CUDA kernels of the forward and the backward, ``"auto"`` (the plan's
    choice) or ``"<forward>/<backward>"`` (:data:`fastdipole.ops.kernels.ENVSUM_KERNELS`); a forced kernel that
    cannot run the problem raises. Only the compiled backend reads it (the reference ignores it)."""
    args = (z.contiguous(), r.contiguous(), pairs.first.contiguous(), pairs.second.contiguous(),
            pairs.row_offsets.contiguous(), mu.reshape(-1).contiguous(), sigma.reshape(-1).contiguous(), float(cutoff))
    if _compiled(backend):
        return torch.ops.fastdipole.gaussian_envsum(*args, kernel)
    return reference.gaussian_envsum(*args)


_ALL_ENVSUM_GRADS = (True, True, True, True)


_AUTO = "auto"  # the schemas' default kernel choice


def _envsum_setup_context(ctx, inputs, output):
    z, r, pair_first, pair_second, row_offsets, mu, sigma, cutoff = inputs[:8]
    ctx.save_for_backward(z, r, pair_first, pair_second, row_offsets, mu, sigma)
    ctx.cutoff = cutoff
    ctx.kernel = inputs[8] if len(inputs) > 8 else _AUTO  # the backward op runs the same choice


def _envsum_backward(ctx, grad_env):
    z, r, pair_first, pair_second, row_offsets, mu, sigma = ctx.saved_tensors
    # Only the gradients autograd needs: in training positions (r) need none, and a one-hot first-layer
    # input (z) none either; the kernel then skips featsum / the r accumulation (None comes back).
    needs = ctx.needs_input_grad
    output_mask = [bool(needs[0]), bool(needs[1]), bool(needs[5]), bool(needs[6])]
    grad_z, grad_r, grad_mu, grad_sigma = torch.ops.fastdipole.gaussian_envsum_backward(
        grad_env.contiguous(), z, r, pair_first, pair_second, row_offsets, mu, sigma, ctx.cutoff, output_mask,
        ctx.kernel
    )
    return grad_z, grad_r, None, None, None, grad_mu, grad_sigma, None, None


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
            return (None,) * 11
        d_env, d_z, d_r, d_mu, d_sigma = torch.autograd.grad(outs, leaves, grads_out, allow_unused=True)
    return d_env, d_z, d_r, None, None, None, d_mu, d_sigma, None, None, None


# ---- segmented_dipole -------------------------------------------------------------------------------------


def segmented_dipole(q: Tensor, R: Tensor, offsets: Tensor, backend: str = "auto") -> Tensor:
    """Dipole vectors (n_molecules, 3) in e*Angstrom: ``mu[m] = sum_{i in m} q_i R_i`` (absolute coordinates)."""
    if _compiled(backend):
        return torch.ops.fastdipole.segmented_dipole(q.reshape(-1).contiguous(), R.contiguous(), offsets.contiguous())
    return reference.segmented_dipole(q.reshape(-1), R, offsets)


def _dipole_setup_context(ctx, inputs, output):
    q, R, offsets = inputs
    ctx.save_for_backward(q, R, offsets)


def _dipole_backward(ctx, grad_mu):
    q, R, offsets = ctx.saved_tensors
    grad_q, grad_R = torch.ops.fastdipole.segmented_dipole_backward(grad_mu.contiguous(), q, R, offsets)
    return grad_q, grad_R, None


def _dipole_backward_setup_context(ctx, inputs, output):
    grad_mu, q, R, offsets = inputs
    ctx.save_for_backward(grad_mu, q, R, offsets)


def _dipole_double_backward(ctx, gg_q, gg_R):
    """The backward is bilinear in (grad_mu, q) and (grad_mu, R): its derivatives are the ops again."""
    grad_mu, q, R, offsets = ctx.saved_tensors
    ops = torch.ops.fastdipole
    d_grad_mu = torch.zeros_like(grad_mu)
    d_q = d_R = None
    if gg_q is not None:  # grad_q[i] = grad_mu[m] . R_i
        d_grad_mu = d_grad_mu + ops.segmented_dipole(gg_q.contiguous(), R, offsets)
        d_R = ops.segmented_dipole_backward(grad_mu, gg_q.contiguous(), R, offsets)[1]
    if gg_R is not None:  # grad_R[i] = grad_mu[m] q_i
        d_grad_mu = d_grad_mu + ops.segmented_dipole(q, gg_R.contiguous(), offsets)
        d_q = ops.segmented_dipole_backward(grad_mu, q, gg_R.contiguous(), offsets)[0]
    return d_grad_mu, d_q, d_R, None


# ---- registration with torch (only when the extension's schemas exist) -------------------------------------


def _register() -> None:
    fake = torch.library.register_fake

    @fake("fastdipole::neighbor_pairs")
    def _neighbor_pairs_fake(R: Tensor, offsets: Tensor, cutoff: float, cell_list_min_atoms=None):
        torch._check(R.dim() == 2 and R.shape[1] == 3, lambda: f"R must have shape (n_atoms, 3), got {tuple(R.shape)}")
        n_pairs = torch.library.get_ctx().new_dynamic_size()
        first = R.new_empty((n_pairs,), dtype=torch.int64)
        second = R.new_empty((n_pairs,), dtype=torch.int64)
        return first, second, R.new_empty((R.shape[0] + 1,), dtype=torch.int64)

    @fake("fastdipole::gaussian_envsum")
    def _gaussian_envsum_fake(z, r, pair_first, pair_second, row_offsets, mu, sigma, cutoff, kernel_choice=_AUTO):
        torch._check(z.dim() == 2, lambda: f"z must be (n_atoms, n_features), got {tuple(z.shape)}")
        torch._check(mu.dim() == 1 and sigma.dim() == 1, lambda: "mu and sigma must be 1-D")
        return z.new_empty((z.shape[0], mu.shape[0], z.shape[1]))

    @fake("fastdipole::gaussian_envsum_backward")
    def _gaussian_envsum_backward_fake(grad_env, z, r, pair_first, pair_second, row_offsets, mu, sigma, cutoff,
                                       output_mask=_ALL_ENVSUM_GRADS, kernel_choice=_AUTO):
        return tuple(torch.empty_like(t) if wanted else None for t, wanted in zip((z, r, mu, sigma), output_mask))

    @fake("fastdipole::segmented_dipole")
    def _segmented_dipole_fake(q, R, offsets):
        return R.new_empty((offsets.shape[0] - 1, 3))

    @fake("fastdipole::segmented_dipole_backward")
    def _segmented_dipole_backward_fake(grad_mu, q, R, offsets):
        return torch.empty_like(q), torch.empty_like(R)

    autograd = torch.library.register_autograd
    autograd("fastdipole::gaussian_envsum", _envsum_backward, setup_context=_envsum_setup_context)
    autograd("fastdipole::gaussian_envsum_backward", _envsum_double_backward,
             setup_context=_envsum_backward_setup_context)
    autograd("fastdipole::segmented_dipole", _dipole_backward, setup_context=_dipole_setup_context)
    autograd("fastdipole::segmented_dipole_backward", _dipole_double_backward,
             setup_context=_dipole_backward_setup_context)


if extension_available():
    _register()
