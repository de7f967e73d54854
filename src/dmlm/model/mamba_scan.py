"""Mamba's selective scan for the CPU: a fused C scan, and a PyTorch one where no compiler works.

Where the ``mamba-ssm`` kernels are absent, transformers runs its PyTorch selective scan: the
sequential reference (its autograd backward is quadratic in length: slicing a big tensor per step)
or, with ``use_mambapy``, mambapy's parallel scan (pads the length to a power of 2 and moves
several full-size tensors per level). This module keeps the exact recurrence of the reference, in
fp32,

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * x_t,      y_t = C_t . h_t (+ D x_t, gated),

differentiated by hand in one reverse sweep (``dh_t = C_t dy_t + exp(delta_{t+1} A) dh_{t+1}``),
in one of two implementations with the same inputs and outputs:

- ``_FusedScan``: ``selective_scan.c`` through ``cscan`` (built once per machine with the system's
  C compiler): one pass each way, the state in cache, exp vectorised;
- ``_Scan``: PyTorch, everything but the recurrence vectorised (one fused multiply-add per step
  over a time-major (batch, channels, state) slice, the parameter gradients as batched
  contractions); used where the C scan cannot be built, or with ``fused=False``
  (``pytorch_selective_scan``).

Measured on one CPU thread (bench/bench_train.py, README) the PyTorch scan is several times faster
than mambapy's in training and the fused one faster again. ``install()`` puts ``selective_scan``
in place of transformers' ``mamba_selective_scan`` (same signature, same results:
tests/test_training.py compares values and gradients of both with the reference) unless mamba-ssm
is installed, whose CUDA kernels then stay in charge.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F

from dmlm.model import cscan


CHUNK = 16  # time steps whose (chunk, batch, channels, state) tensors are worked on together (cache-sized)
# Without gradients no state is kept past its chunk: the chunk's buffers are reused and sized to
# stay in the CPU cache (about this many elements, 2 to 16 steps). Measured on one thread, length
# 186: 2.4x faster than the training forward at batch 32, as fast at batch 1 (tests/test_training.py
# checks both give the same values)
INFERENCE_ELEMENTS = 1 << 17


def _scan_no_grad(delta, x, A, Bm, C):
    """``_Scan.forward``'s values without keeping the states for a backward: the same operations in
    the same order, on two reused (chunk, batch, channels, state) buffers."""
    length, batch, channels = delta.shape
    y = delta.new_empty(length, batch, channels, 1)
    dx = delta * x
    k = min(max(2, min(16, INFERENCE_ELEMENTS // (batch * channels * A.shape[1]))), length)
    states = delta.new_empty(k, batch, channels, A.shape[1])
    decays = torch.empty_like(states)
    prev = None
    for s in range(0, length, k):
        e = min(s + k, length)
        if prev is not None:  # the previous chunk's last state, about to be overwritten
            prev = prev.clone()
        decay = torch.exp(torch.mul(delta[s:e, :, :, None], A, out=decays[: e - s]), out=decays[: e - s])
        chunk = torch.mul(dx[s:e, :, :, None], Bm[s:e, :, None, :], out=states[: e - s])
        for t in range(e - s):
            if prev is not None:
                torch.addcmul(chunk[t], decay[t], prev, out=chunk[t])
            prev = chunk[t]
        torch.matmul(chunk, C[s:e, :, :, None], out=y[s:e])
    return y.squeeze(-1), prev.clone()


class _Scan(torch.autograd.Function):
    """(delta, x: L x B x D; A: D x N; Bm, C: L x B x N) -> (y: L x B x D, last state: B x D x N).

    Works through time in chunks of ``CHUNK`` steps so that each chunk's decay, input and gradient
    tensors stay in the CPU cache; only the states are kept for the backward (the decays are
    recomputed)."""

    @staticmethod
    def forward(ctx, delta, x, A, Bm, C):
        length, batch, channels = delta.shape
        states = delta.new_empty(length, batch, channels, A.shape[1])
        y = delta.new_empty(length, batch, channels, 1)
        dx = delta * x
        prev = None
        for s in range(0, length, CHUNK):
            e = min(s + CHUNK, length)
            decay = torch.exp(delta[s:e, :, :, None] * A)
            chunk = torch.mul(dx[s:e, :, :, None], Bm[s:e, :, None, :], out=states[s:e])
            for t in range(e - s):
                if prev is not None:
                    torch.addcmul(chunk[t], decay[t], prev, out=chunk[t])
                prev = chunk[t]
            torch.matmul(chunk, C[s:e, :, :, None], out=y[s:e])
        ctx.save_for_backward(delta, x, A, Bm, C, states)
        return y.squeeze(-1), states[-1].clone()

    @staticmethod
    def backward(ctx, gy, glast):
        delta, x, A, Bm, C, states = ctx.saved_tensors
        length = delta.shape[0]
        gy = gy.contiguous()
        g_delta, g_x = torch.empty_like(delta), torch.empty_like(x)
        g_b, g_c = torch.empty_like(Bm), torch.empty_like(C)
        g_a = torch.zeros_like(A)
        dx = delta * x
        carry = glast  # dL/dh flowing into the chunk's last step from later steps
        for s in reversed(range(0, length, CHUNK)):
            e = min(s + CHUNK, length)
            decay = torch.exp(delta[s:e, :, :, None] * A)
            # dL/dh_t = C_t dy_t + decay_{t+1} dL/dh_{t+1}, backwards through the chunk
            gh = gy[s:e, :, :, None] * C[s:e, :, None, :]
            if carry is not None:
                gh[-1] += carry
            for t in range(e - s - 2, -1, -1):
                torch.addcmul(gh[t], decay[t + 1], gh[t + 1], out=gh[t])
            carry = decay[0] * gh[0]
            chunk = states[s:e]
            torch.matmul(gy[s:e, :, None, :], chunk, out=g_c[s:e, :, None, :])
            # through decay_t = exp(delta_t A): d/d(delta_t A) = dh_t * h_{t-1} * decay_t (h_{-1} = 0)
            g_exp = gh * decay
            if s == 0:
                g_exp[1:] *= chunk[:-1]
                g_exp[0] = 0
            else:
                g_exp *= states[s - 1 : e - 1]
            g_delta[s:e] = torch.linalg.vecdot(g_exp, A.expand_as(g_exp))
            g_a += (g_exp * delta[s:e, :, :, None]).sum((0, 1))
            # through the input term delta_t x_t B_t (contractions as small batched matmuls)
            gh_b = torch.matmul(gh, Bm[s:e, :, :, None]).squeeze(-1)
            g_delta[s:e] += gh_b * x[s:e]
            torch.mul(gh_b, delta[s:e], out=g_x[s:e])
            torch.matmul(dx[s:e, :, None, :], gh, out=g_b[s:e, :, None, :])
        return g_delta, g_x, g_a, g_b, g_c


class _FusedScan(torch.autograd.Function):
    """``_Scan`` in one fused C pass each way (``cscan``); the same inputs and outputs."""

    @staticmethod
    def forward(ctx, delta, x, A, Bm, C):
        y, states, _ = cscan.forward(delta, x, A, Bm, C, keep_states=True)
        ctx.save_for_backward(delta, x, A, Bm, C, states)
        return y, states[-1].clone()

    @staticmethod
    def backward(ctx, gy, glast):
        delta, x, A, Bm, C, states = ctx.saved_tensors
        return cscan.backward(delta, x, A, Bm, C, states, gy.contiguous(), None if glast is None else glast.contiguous())


def _fused_no_grad(delta, x, A, Bm, C):
    y, _, last = cscan.forward(delta, x, A, Bm, C, keep_states=False)
    return y, last


def _scan_function(grad: bool, device: torch.device, fused: bool):
    if fused and device.type == "cpu" and cscan.library() is not None:  # (CUDA without mamba-ssm: PyTorch)
        return _FusedScan.apply if grad else _fused_no_grad
    return _Scan.apply if grad else _scan_no_grad


def selective_scan(
    hidden_states,
    dt,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    fused: bool = True,
    **_,
):
    """transformers' ``mamba_selective_scan`` interface: hidden_states, dt, z (batch, D, L);
    A (D, N); B, C (batch, N, L); returns the scan output (batch, D, L) [and the last state].
    ``fused=False``: the PyTorch scan even where the C one builds (tests and bench compare both)."""
    dtype = hidden_states.dtype
    dt = dt.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[..., None]
    if delta_softplus:
        dt = F.softplus(dt)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (hidden_states, dt, A, B, C))
    with torch.autocast(hidden_states.device.type, enabled=False):  # fp32 throughout, as the reference
        y, last = _scan_function(grad, hidden_states.device, fused)(
            dt.permute(2, 0, 1).contiguous(),
            hidden_states.float().permute(2, 0, 1).contiguous(),
            A.float(),
            B.float().permute(2, 0, 1).contiguous(),
            C.float().permute(2, 0, 1).contiguous(),
        )
    out = y.permute(1, 2, 0)
    if D is not None:
        out = out + hidden_states.float() * D.float()[None, :, None]
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(dtype)
    return (out, last) if return_last_state else out


# ``selective_scan`` on the PyTorch scan (what runs where no C compiler works); bound to the
# function itself, so it stays that even where ``selective_scan`` is swapped (tests/test_training.py)
pytorch_selective_scan = functools.partial(selective_scan, fused=False)


_REFERENCE = []  # transformers' own function, kept for the tests' comparison


def reference():
    """transformers' ``mamba_selective_scan`` as it was before ``install``."""
    from transformers.models.mamba import modeling_mamba

    return _REFERENCE[0] if _REFERENCE else modeling_mamba.mamba_selective_scan


def install() -> bool:
    """Use ``selective_scan`` for transformers' Mamba unless mamba-ssm's kernels are installed."""
    if importlib.util.find_spec("mamba_ssm") is not None:
        return False
    from transformers.models.mamba import modeling_mamba

    if not _REFERENCE:
        _REFERENCE.append(modeling_mamba.mamba_selective_scan)
    modeling_mamba.mamba_selective_scan = selective_scan
    return True
