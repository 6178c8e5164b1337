"""Kernel (linear) attention: ``softmax(q k^T)`` replaced by a feature-map kernel ``phi(q) phi(k)^T``.

Notation: B batch, H query heads, H_kv key/value heads (G = H / H_kv), L query length, S key length,
E head dim, Ev value dim, F features, C chunk length.

With features the output is ``phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T (sum_j phi(k_j))``: the
sums cost ``O(S F Ev)`` once, so attention costs ``O((L + S) F Ev)`` instead of ``O(L S E)``.

* Feature maps: :func:`elu_feature_map` (``elu(x) + 1``, Katharopoulos et al. 2020) and
  :func:`favor_features`, Performer's FAVOR+ positive orthogonal random features (Choromanski et al.
  2021), which estimate the softmax kernel ``exp(q.k / sqrt(E))``; draw (and redraw) the projection
  with :func:`draw_orthogonal_features`.
* :func:`kernel_attention` on features; causal via prefix sums computed chunk by chunk (a ``C x C``
  block inside each chunk, running ``F x Ev`` sums across chunks: bounded memory).
* :func:`linear_attention_step`: causal linear attention as an RNN with an ``O(1)`` state per step,
  for decoding.
* :func:`kernel_attention_quadratic`: the explicit ``L x S`` form, the reference the tests use.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from qkv.functional._memory import empty_large

__all__ = [
    "elu_feature_map",
    "feature_maps",
    "draw_orthogonal_features",
    "favor_features",
    "kernel_attention",
    "kernel_attention_quadratic",
    "linear_attention",
    "linear_attention_step",
]


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """``phi(x) = elu(x) + 1`` (positive), any shape ``(..., E)`` -> ``(..., E)``."""
    return F.elu(x).add_(1.0)  # in place: elu's backward reads its input, not its output


def draw_orthogonal_features(
    num_features: int,
    dim: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Orthogonal random projection ``(num_features, dim)`` for FAVOR+.

    Rows come in blocks of ``dim`` exactly orthogonal directions (QR of a Gaussian matrix), each row
    rescaled to the norm of an independent ``dim``-dimensional Gaussian vector, so every row is
    marginally ``N(0, I)`` while rows within a block are orthogonal (lower estimator variance).
    """
    if not isinstance(num_features, int) or num_features < 1:
        raise ValueError(f"num_features must be an int >= 1, got {num_features!r}")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1, got {dim!r}")
    blocks = []
    for _ in range(math.ceil(num_features / dim)):
        g = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        qmat, _ = torch.linalg.qr(g)  # (dim, dim), orthonormal columns
        blocks.append(qmat.T)
    w = torch.cat(blocks)[:num_features]  # (F, dim)
    norms = torch.randn(num_features, dim, generator=generator, dtype=torch.float64).norm(dim=1)
    return (w * norms[:, None]).to(device=device, dtype=dtype)


def favor_features(x: torch.Tensor, projection: torch.Tensor, *, is_query: bool) -> torch.Tensor:
    """FAVOR+ positive random features of the softmax kernel: ``E[phi(q).phi(k)] ~ exp(q.k / sqrt(E))``.

    Args:
        x: queries or keys ``(B, H, L, E)``.
        projection: ``(F, E)`` from :func:`draw_orthogonal_features`.
        is_query: queries subtract their own row maximum, keys one maximum per (batch, head); both
            constants cancel in the attention normalisation and keep ``exp`` in range.

    Returns:
        ``(B, H, L, F)``.
    """
    if projection.dim() != 2 or projection.shape[1] != x.shape[-1]:
        raise ValueError(f"projection must be (F, E={x.shape[-1]}), got {tuple(projection.shape)}")
    x = x * x.shape[-1] ** -0.25  # so that x_q . x_k = q.k / sqrt(E)
    wx = torch.matmul(x, projection.to(x.dtype).T)  # (B, H, L, F)
    sq = 0.5 * (x * x).sum(-1, keepdim=True)  # (B, H, L, 1)
    if is_query:
        stab = wx.amax(-1, keepdim=True).detach()
    else:
        stab = wx.amax(dim=(-1, -2), keepdim=True).detach()
    # exp(wx - |x|^2/2 - stab) / sqrt(F), the 1/sqrt(F) folded into the exponent; in place on wx
    # (matmul's backward does not need its output), so one (B, H, L, F) temporary fewer per step.
    log_norm = 0.5 * math.log(projection.shape[0])
    return torch.exp(wx.sub_(sq).sub_(stab + log_norm)) + 1e-6 / math.sqrt(projection.shape[0])


def _group(phi_q: torch.Tensor, H_kv: int) -> torch.Tensor:
    """(B, H, L, F) -> (B, H_kv, G*L, F): grouped heads share one set of key/value sums."""
    B, H, L, Fd = phi_q.shape
    return phi_q.reshape(B, H_kv, (H // H_kv) * L, Fd)  # (B, H_kv, G*L, F)


def _ungroup(out: torch.Tensor, H: int) -> torch.Tensor:
    B, H_kv, GL, Ev = out.shape
    return out.reshape(B, H, GL * H_kv // H, Ev)  # (B, H, L, Ev)


def _divide(num: torch.Tensor, den: torch.Tensor, eps: float) -> torch.Tensor:
    """``num / (den + eps)``: a row with no visible key has ``num == den == 0`` and gives zeros, not NaN."""
    return num / (den + eps)  # den is (..., 1): one pass over num


def _check(phi_q, phi_k, v, key_padding, chunk) -> None:
    for name, t in (("phi_q", phi_q), ("phi_k", phi_k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, heads, length, dim), got shape {tuple(t.shape)}")
    if phi_q.shape[-1] != phi_k.shape[-1] or phi_k.shape[:3] != v.shape[:3] or phi_q.shape[0] != v.shape[0]:
        raise ValueError(f"shapes do not match: phi_q {tuple(phi_q.shape)}, phi_k {tuple(phi_k.shape)}, "
                         f"v {tuple(v.shape)}")
    if phi_q.shape[1] % phi_k.shape[1]:
        raise ValueError(f"query heads H={phi_q.shape[1]} must be a multiple of H_kv={phi_k.shape[1]}")
    if key_padding is not None and (key_padding.dtype != torch.bool or key_padding.shape != (v.shape[0], v.shape[2])):
        raise ValueError(f"key_padding must be bool (B, S) = {(v.shape[0], v.shape[2])}, got "
                         f"{key_padding.dtype} {tuple(key_padding.shape)}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")


def kernel_attention(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding: torch.Tensor | None = None,
    chunk: int = 128,
    eps: float = 1e-6,
    feature_map: Callable[[torch.Tensor], torch.Tensor] | None = None,
    block: int = 1024,
) -> torch.Tensor:
    """Linear attention on non-negative features.

    Args:
        phi_q: query features ``(B, H, L, F)``.
        phi_k: key features ``(B, H_kv, S, F)``.
        v: values ``(B, H_kv, S, Ev)``.
        causal: lower-right aligned: query ``i`` sums keys ``j <= i + S - L`` (prefix sums).
        key_padding: ``(B, S)`` bool, True = real key (padding keys are left out of the sums).
        chunk: chunk length C for the causal prefix sums (memory ``O(C^2 + F Ev)`` per head).
        eps: added to non-zero denominators.
        feature_map: if given, ``phi_q`` and ``phi_k`` are the raw queries and keys ``(..., E)`` and the
            map (e.g. :func:`elu_feature_map`) is applied here; without a mask of causality it is applied
            block by block, so no ``L``-sized feature tensor is ever built.
        block: rows per block of the non-causal sums (``O(block F)`` temporaries, so the time stays
            linear in ``L`` instead of paying for fresh ``L``-sized buffers).

    Returns:
        ``(B, H, L, Ev)``; queries with no visible key give zeros.
    """
    _check(phi_q, phi_k, v, key_padding, chunk)
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be an int >= 1, got {block!r}")
    H, L = phi_q.shape[1], phi_q.shape[2]
    H_kv, S = phi_k.shape[1], phi_k.shape[2]
    if not causal:
        return _noncausal(phi_q, phi_k, v, key_padding, feature_map, block, eps, H, H_kv)
    if feature_map is not None:
        phi_q, phi_k = feature_map(phi_q), feature_map(phi_k)
    if key_padding is not None:
        phi_k = phi_k * key_padding[:, None, :, None].to(phi_k.dtype)  # padded keys contribute 0
    return _causal(phi_q, phi_k, v, chunk, eps, H, H_kv, L, S)


def _noncausal(phi_q, phi_k, v, key_padding, feature_map, block, eps, H, H_kv) -> torch.Tensor:
    """``sum_j phi(k_j) v_j^T`` and ``sum_j phi(k_j)`` over key blocks, then the queries block by block."""
    kv = z = None
    for s in range(0, phi_k.shape[2], block):
        k_b = phi_k[:, :, s : s + block]  # (B, H_kv, C, F or E)
        k_b = k_b if feature_map is None else feature_map(k_b)
        if key_padding is not None:
            k_b = k_b * key_padding[:, None, s : s + block, None].to(k_b.dtype)  # padded keys contribute 0
        kv_b = torch.matmul(k_b.transpose(-1, -2), v[:, :, s : s + block])  # (B, H_kv, F, Ev)
        z_b = k_b.sum(-2, keepdim=True)  # (B, H_kv, 1, F)
        kv, z = (kv_b, z_b) if kv is None else (kv + kv_b, z + z_b)
    zt = z.transpose(-1, -2)  # (B, H_kv, F, 1)
    L = phi_q.shape[2]
    out = empty_large(phi_q.shape[0], H, L, v.shape[-1], dtype=v.dtype, device=v.device)  # (B, H, L, Ev)
    for s in range(0, L, block):
        q_b = phi_q[:, :, s : s + block]  # (B, H, C, F or E)
        pq = _group(q_b if feature_map is None else feature_map(q_b), H_kv)  # (B, H_kv, G*C, F)
        # num / (den + eps); den is (B, H_kv, G*C, 1): no (G*C, F) temporary
        out[:, :, s : s + block] = _ungroup(_divide(torch.matmul(pq, kv), torch.matmul(pq, zt), eps), H)
    return out


def _causal(phi_q, phi_k, v, chunk, eps, H, H_kv, L, S) -> torch.Tensor:
    """Chunk-wise prefix sums; keys before the aligned start (S > L) seed the running sums."""
    B, G = phi_q.shape[0], H // H_kv
    off = S - L
    if off < 0:  # L > S: the first L - S queries see no key; the rest align with the keys one to one
        rest = _causal(phi_q[:, :, -off:], phi_k, v, chunk, eps, H, H_kv, S, S)  # (B, H, S, Ev)
        return torch.cat([rest.new_zeros(B, H, -off, v.shape[-1]), rest], dim=2)
    pq = phi_q.view(B, H_kv, G, L, -1)  # (B, H_kv, G, L, F)
    kv = torch.matmul(phi_k[:, :, :off].transpose(-1, -2), v[:, :, :off]) if off > 0 else \
        v.new_zeros(B, H_kv, phi_k.shape[-1], v.shape[-1])  # (B, H_kv, F, Ev)
    z = phi_k[:, :, :off].sum(-2) if off > 0 else phi_k.new_zeros(B, H_kv, phi_k.shape[-1])  # (B, H_kv, F)
    outs = []
    for s in range(0, L, chunk):
        e = min(s + chunk, L)
        q_c = pq[:, :, :, s:e]  # (B, H_kv, G, C, F)
        k_c, v_c = phi_k[:, :, off + s : off + e], v[:, :, off + s : off + e]  # (B, H_kv, C, F/Ev)
        a = torch.matmul(q_c, k_c.unsqueeze(2).transpose(-1, -2)).tril()  # (B, H_kv, G, C, C)
        num = torch.matmul(q_c, kv.unsqueeze(2)) + torch.matmul(a, v_c.unsqueeze(2))  # (B, H_kv, G, C, Ev)
        den = (q_c * z[:, :, None, None]).sum(-1, keepdim=True) + a.sum(-1, keepdim=True)  # (.., C, 1)
        outs.append(_divide(num, den, eps))
        kv = kv + torch.matmul(k_c.transpose(-1, -2), v_c)
        z = z + k_c.sum(-2)
    out = torch.cat(outs, dim=3)  # (B, H_kv, G, L, Ev)
    return out.reshape(B, H, L, v.shape[-1])


def kernel_attention_quadratic(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """The explicit ``O(L S)`` form ``(A / A.sum(-1)) v`` with ``A = phi_q phi_k^T``: the reference."""
    _check(phi_q, phi_k, v, key_padding, 1)
    H, L = phi_q.shape[1], phi_q.shape[2]
    H_kv, S = phi_k.shape[1], phi_k.shape[2]
    g = H // H_kv
    k = phi_k.repeat_interleave(g, dim=1)  # (B, H, S, F)
    vv = v.repeat_interleave(g, dim=1)  # (B, H, S, Ev)
    a = torch.matmul(phi_q, k.transpose(-1, -2))  # (B, H, L, S)
    if causal:
        a = a * torch.ones(L, S, dtype=torch.bool, device=a.device).tril(S - L)
    if key_padding is not None:
        a = a * key_padding[:, None, None, :]
    return _divide(torch.matmul(a, vv), a.sum(-1, keepdim=True), eps)


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding: torch.Tensor | None = None,
    projection: torch.Tensor | None = None,
    chunk: int = 128,
) -> torch.Tensor:
    """Linear attention on q ``(B, H, L, E)``, k ``(B, H_kv, S, E)``, v ``(B, H_kv, S, Ev)``.

    Uses ``elu + 1`` features, or FAVOR+ (Performer) when a ``projection`` ``(F, E)`` is given.
    Returns ``(B, H, L, Ev)``; see :func:`kernel_attention` for the other arguments.
    """
    if projection is None:  # elu + 1 acts row by row: applied block by block inside kernel_attention
        return kernel_attention(q, k, v, causal=causal, key_padding=key_padding, chunk=chunk,
                                feature_map=elu_feature_map)
    phi_q, phi_k = feature_maps(q, k, projection)
    return kernel_attention(phi_q, phi_k, v, causal=causal, key_padding=key_padding, chunk=chunk)


def feature_maps(
    q: torch.Tensor, k: torch.Tensor, projection: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(phi(q), phi(k))``: ``elu + 1``, or FAVOR+ with ``projection`` ``(F, E)`` (whose key features share
    one stabilising maximum over all keys, so they are built whole)."""
    if projection is None:
        return elu_feature_map(q), elu_feature_map(k)
    return favor_features(q, projection, is_query=True), favor_features(k, projection, is_query=False)


def linear_attention_step(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One decoding step of causal linear attention as an RNN, with an ``O(1)`` state.

    Args:
        phi_q: this step's query features ``(B, H, 1, F)``.
        phi_k: this step's key features ``(B, H_kv, 1, F)``.
        v: this step's values ``(B, H_kv, 1, Ev)``.
        state: ``(kv (B, H_kv, F, Ev), z (B, H_kv, F))`` running sums of the earlier steps, or None.

    Returns:
        ``(out (B, H, 1, Ev), new_state)``; equals :func:`kernel_attention` with ``causal=True`` row by row.
    """
    if phi_q.dim() != 4 or phi_q.shape[2] != 1 or phi_k.shape[2] != 1 or v.shape[2] != 1:
        raise ValueError(f"a step takes one position: phi_q (B, H, 1, F), phi_k (B, H_kv, 1, F), v (B, H_kv, 1, Ev); "
                         f"got {tuple(phi_q.shape)}, {tuple(phi_k.shape)}, {tuple(v.shape)}")
    if state is None:
        kv = torch.matmul(phi_k.transpose(-1, -2), v)  # (B, H_kv, F, Ev)
        z = phi_k[:, :, 0]  # (B, H_kv, F)
    else:
        kv = state[0] + torch.matmul(phi_k.transpose(-1, -2), v)
        z = state[1] + phi_k[:, :, 0]
    H, H_kv = phi_q.shape[1], phi_k.shape[1]
    pq = _group(phi_q, H_kv)  # (B, H_kv, G, F)
    num = torch.matmul(pq, kv)  # (B, H_kv, G, Ev)
    den = (pq * z[:, :, None]).sum(-1, keepdim=True)  # (B, H_kv, G, 1)
    return _ungroup(_divide(num, den, eps), H), (kv, z)
