"""Attribution-robustness metrics as pure tensor functions (top-k: Ghorbani et al., AAAI 2019, arXiv:1710.10547; LENS: Kamath et al., "Rethinking Robustness of Model Attributions", AAAI 2024, arXiv:2312.10534).

Maps are ``[B, H, W]`` (use :func:`robustattr.attributions.attribution_map` to get
``a = Σ_c |g_c|`` from ``g: [B, C, H, W]``; 4-D inputs are converted automatically);
every function returns one value per sample, ``[B]`` (float32 on the input's device).

Conventions for degenerate maps (no NaN ever leaks into averages; NaN/inf maps are refused):

* rank correlations (Spearman, Kendall τ-b and their LENS forms): if BOTH maps are constant
  (e.g. all zero) the rankings are identical → **1.0**; if exactly one is constant → **0.0**.
* cosine similarity: both vectors zero → 1.0; exactly one zero → 0.0.
* mass center of an all-zero map: the image centre ``((H−1)/2, (W−1)/2)``.
* top-k / LENS / top-k-div: ties at the k-th value are broken arbitrarily but
  deterministically (``numpy.argpartition`` on CPU, ``torch.topk`` elsewhere).

Bad inputs raise ``ValueError`` naming the offending value: ``k`` outside ``[1, H·W]``,
``w`` even or < 1, maps of different shapes, NaN or ±inf in a map (the message names the samples).
"""

from __future__ import annotations

import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F
from torch import Tensor

from robustattr.utils import contract

__all__ = [
    "as_map",
    "check_pair",
    "cosine_similarity",
    "dilate",
    "kendall_tau",
    "lens_kendall",
    "lens_spearman",
    "lens_topk",
    "lens_topk_div",
    "mass_center",
    "mass_center_dislocation",
    "spearman",
    "topk_div_mask",
    "topk_div_intersection",
    "topk_intersection",
    "topk_mask",
]


# ---- validation ---------------------------------------------------------------------
def as_map(a: Tensor) -> Tensor:
    """``[B, H, W]`` as is; ``[B, C, H, W]`` → ``Σ_c |a_c|``; ``[H, W]`` → ``[1, H, W]``."""
    if a.dim() == 4:
        return a.abs().sum(dim=1)
    if a.dim() == 2:
        return a.unsqueeze(0)
    if a.dim() != 3:
        raise ValueError(f"expected a map [B, H, W] or an attribution [B, C, H, W], got shape {tuple(a.shape)}")
    return a


def _np(t: Tensor) -> np.ndarray:
    """A CPU tensor as a numpy array (half/bfloat16 widened to float32)."""
    t = t.detach()
    if t.dtype not in (torch.float32, torch.float64, torch.bool):
        t = t.to(torch.float32)
    return t.numpy()


def _check_nan(a: Tensor, name: str) -> None:
    """Refuse NaN or ±inf anywhere in ``a: [B, ...]`` (one reduction; samples named only on failure)."""
    contract.check_finite(a, name, hint="")


def check_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Validate and convert two maps: same shape, finite (no NaN/inf); returns ``[B, H, W]`` each.

    Raises:
        ValueError: e.g. ``second map is NaN/inf for samples [2]``.
    """
    a, b = as_map(a), as_map(b)
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    _check_nan(a, "first map")
    _check_nan(b, "second map")
    return a, b


def _check_k(k: int, n: int) -> None:
    if not isinstance(k, int) or k < 1 or k > n:
        raise ValueError(f"k must be an integer in [1, {n}] (number of pixels), got {k!r}")


def _check_w(w: int) -> None:
    if not isinstance(w, int) or w < 1 or w % 2 == 0:
        raise ValueError(f"w must be a positive odd integer, got {w!r}")


# ---- rank correlations ------------------------------------------------------------------
def _tied_pairs(sorted_keys: list[Tensor]) -> Tensor:
    """Number of pairs equal in every key, for rows sorted lexicographically by the keys; ``[B]`` int64.

    ``Σ_groups t(t−1)/2 = Σ_i (i − start(i))`` where ``start(i)`` is the first index of i's run.
    """
    n = sorted_keys[0].shape[1]
    idx = torch.arange(n, device=sorted_keys[0].device).expand_as(sorted_keys[0])
    new = torch.zeros_like(sorted_keys[0], dtype=torch.bool)
    new[:, 0] = True
    for key in sorted_keys:
        new[:, 1:] |= key[:, 1:] != key[:, :-1]
    start = torch.cummax(torch.where(new, idx, torch.zeros_like(idx)), dim=1).values
    return (idx - start).sum(dim=1)


def _inversions(v: Tensor) -> Tensor:
    """Pairs ``i < j`` with ``v_i > v_j`` per row of ``v: [B, n]``; ``[B]`` int64, O(n log² n), batched.

    Bottom-up merge sort: at block size s, for every element of each right half count the
    left-half elements strictly greater (``s − searchsorted(left, r, right=True)`` on the
    sorted left half), then sort each merged block. Rows are padded with +inf at the end
    (pads are never smaller than an earlier element, so they add no inversion).
    """
    B, n = v.shape
    size = 1
    while size < n:
        size *= 2
    if size > n:
        v = torch.cat([v, torch.full((B, size - n), float("inf"), dtype=v.dtype, device=v.device)], dim=1)
    total = torch.zeros(B, dtype=torch.int64, device=v.device)
    s = 1
    while s < size:
        blocks = v.view(B, size // (2 * s), 2, s)
        left, right = blocks[:, :, 0].contiguous(), blocks[:, :, 1].contiguous()
        le = torch.searchsorted(left, right, right=True)  # left elements ≤ each right element
        total += (s - le).sum(dim=(1, 2))
        v = torch.sort(blocks.reshape(B, size // (2 * s), 2 * s), dim=2).values.reshape(B, size)
        s *= 2
    return total


def _rank_degenerate(a: Tensor, b: Tensor, value: Tensor) -> Tensor:
    """Apply the constant-map convention: both constant → 1, one constant → 0."""
    ca = (a == a[:, :1]).all(dim=1)
    cb = (b == b[:, :1]).all(dim=1)
    out = torch.where(ca & cb, torch.ones_like(value), value)
    return torch.where(ca ^ cb, torch.zeros_like(value), out)


def _kendall_torch(a: Tensor, b: Tensor) -> Tensor:
    """Batched τ-b on ``[B, n]`` float64 rows (any device)."""
    n = a.shape[1]
    # lexicographic sort by (a, b): stable sort by b, then stable sort by a
    ob = torch.sort(b, dim=1, stable=True).indices
    a1, b1 = a.gather(1, ob), b.gather(1, ob)
    oa = torch.sort(a1, dim=1, stable=True).indices
    a2, b2 = a1.gather(1, oa), b1.gather(1, oa)
    n0 = n * (n - 1) // 2
    n1 = _tied_pairs([a2])  # ties in a
    n3 = _tied_pairs([a2, b2])  # joint ties
    n2 = _tied_pairs([torch.sort(b, dim=1).values])  # ties in b
    dis = _inversions(b2)  # ties in a are ordered by b, so they add no inversion
    num = (n0 - n1 - n2 + n3 - 2 * dis).to(torch.float64)
    den = torch.sqrt((n0 - n1).to(torch.float64) * (n0 - n2).to(torch.float64))
    return num / torch.where(den > 0, den, torch.ones_like(den))


def kendall_tau(a: Tensor, b: Tensor, backend: str = "auto") -> Tensor:
    """Kendall τ-b between two maps per sample; ``[B, H, W] × [B, H, W] → [B]``.

    ``τ_b = (n_c − n_d) / sqrt((n₀ − n₁)(n₀ − n₂))`` with ``n₀ = n(n−1)/2``, ``n₁``/``n₂`` the
    pairs tied in ``a``/``b``, and ``n_c − n_d = n₀ − n₁ − n₂ + n₃ − 2·n_d`` (``n₃``: pairs tied
    in both), equal to ``scipy.stats.kendalltau`` (variant b).

    Args:
        a, b: maps (or attributions ``[B, C, H, W]``, reduced by ``Σ_c|·|``).
        backend: ``"torch"`` — batched on-device O(n log² n) (lexicographic sort + merge-sort
            inversion count); ``"scipy"`` — loop over samples calling scipy (CPU tensors only);
            ``"auto"`` (default) — scipy for CPU tensors (its C code is the fastest there),
            torch elsewhere.
    Returns:
        ``[B]`` float32; constant maps follow the module convention (1 if both, 0 if one).
    """
    a, b = check_pair(a, b)
    if backend not in ("auto", "torch", "scipy"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'scipy', got {backend!r}")
    use_scipy = backend == "scipy" or (backend == "auto" and a.device.type == "cpu")
    if use_scipy:  # all in numpy: no torch CPU kernels (thread start-up) around scipy's C code
        an = _np(a.cpu()).reshape(a.shape[0], -1).astype(np.float64)
        bn = _np(b.cpu()).reshape(b.shape[0], -1).astype(np.float64)
        tau = np.nan_to_num(np.array([scipy.stats.kendalltau(an[i], bn[i]).statistic for i in range(an.shape[0])]), nan=0.0)
        ca, cb = (an == an[:, :1]).all(1), (bn == bn[:, :1]).all(1)
        tau = np.where(ca & cb, 1.0, np.where(ca ^ cb, 0.0, tau))
        return torch.from_numpy(tau.astype(np.float32)).to(a.device)
    fa, fb = a.flatten(1).to(torch.float64), b.flatten(1).to(torch.float64)
    return _rank_degenerate(fa, fb, _kendall_torch(fa, fb)).to(torch.float32)


def _average_ranks(v: Tensor) -> Tensor:
    """Average (fractional) ranks 1..n of each row of ``v: [B, n]``, ties get the mean rank."""
    B, n = v.shape
    sv, order = torch.sort(v, dim=1)
    idx = torch.arange(n, device=v.device).expand(B, n)
    new = torch.ones_like(sv, dtype=torch.bool)
    new[:, 1:] = sv[:, 1:] != sv[:, :-1]
    start = torch.cummax(torch.where(new, idx, torch.zeros_like(idx)), dim=1).values
    last = torch.ones_like(new)
    last[:, :-1] = new[:, 1:]
    big = torch.full_like(idx, n - 1)
    end = torch.flip(torch.cummin(torch.flip(torch.where(last, idx, big), [1]), dim=1).values, [1])
    r_sorted = (start + end).to(torch.float64) / 2 + 1
    return torch.empty_like(r_sorted).scatter_(1, order, r_sorted)


def _average_ranks_np(v: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`_average_ranks` (CPU: numpy's sort is several times faster than torch's)."""
    B, n = v.shape
    order = np.argsort(v, axis=1)  # tie order is irrelevant: ties get their mean rank
    sv = np.take_along_axis(v, order, axis=1)
    idx = np.broadcast_to(np.arange(n), (B, n))
    new = np.ones((B, n), dtype=bool)
    new[:, 1:] = sv[:, 1:] != sv[:, :-1]
    start = np.maximum.accumulate(np.where(new, idx, 0), axis=1)
    last = np.ones((B, n), dtype=bool)
    last[:, :-1] = new[:, 1:]
    end = np.minimum.accumulate(np.where(last, idx, n - 1)[:, ::-1], axis=1)[:, ::-1]
    out = np.empty((B, n), dtype=np.float64)
    np.put_along_axis(out, order, (start + end) / 2.0 + 1.0, axis=1)
    return out


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman ρ per sample: Pearson correlation of average ranks; ``[B, H, W] × [B, H, W] → [B]``.

    ``ρ = cov(R(a), R(b)) / (σ(R(a)) σ(R(b)))`` with ties given their mean rank, equal to
    ``scipy.stats.spearmanr``. Batched, O(n log n): ranks by NumPy for CPU tensors (faster
    sort), on device otherwise. Constant maps: module convention.
    """
    a, b = check_pair(a, b)
    fa, fb = a.flatten(1).to(torch.float64), b.flatten(1).to(torch.float64)
    if fa.device.type == "cpu":
        ra_np = _average_ranks_np(fa.detach().numpy())
        rb_np = _average_ranks_np(fb.detach().numpy())
        ra_np -= ra_np.mean(axis=1, keepdims=True)
        rb_np -= rb_np.mean(axis=1, keepdims=True)
        ra, rb = torch.from_numpy(ra_np), torch.from_numpy(rb_np)
    else:
        ra, rb = _average_ranks(fa), _average_ranks(fb)
        ra = ra - ra.mean(dim=1, keepdim=True)
        rb = rb - rb.mean(dim=1, keepdim=True)
    ssa, ssb = (ra * ra).sum(1), (rb * rb).sum(1)  # zero iff the map is constant
    den = torch.sqrt(ssa * ssb)
    rho = ((ra * rb).sum(1) / torch.where(den > 0, den, torch.ones_like(den))).clamp(-1.0, 1.0)
    ca, cb = ssa == 0, ssb == 0
    rho = torch.where(ca & cb, torch.ones_like(rho), torch.where(ca ^ cb, torch.zeros_like(rho), rho))
    return rho.to(torch.float32)


# ---- top-k and LENS ------------------------------------------------------------------
def _count(mask: Tensor) -> Tensor:
    """``Σ`` over all but the batch dimension of a bool mask, as float32 ``[B]``."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.count_nonzero(mask.flatten(1).numpy(), axis=1).astype(np.float32))
    return mask.flatten(1).sum(1).to(torch.float32)


def _topk_mask(a: Tensor, k: int) -> Tensor:
    flat = a.flatten(1)
    if flat.device.type == "cpu":
        # numpy's O(n) argpartition is much faster than torch.topk on CPU for large k
        arr = _np(flat)
        n = arr.shape[1]
        idx_np = np.argpartition(arr, n - k, axis=1)[:, n - k :]  # the k largest, no negated copy
        mask_np = np.zeros(arr.shape, dtype=bool)
        np.put_along_axis(mask_np, idx_np, True, axis=1)
        return torch.from_numpy(mask_np).view(a.shape)
    idx = flat.topk(k, dim=1).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
    return mask.view_as(a)


def topk_mask(a: Tensor, k: int) -> Tensor:
    """``T_k(a)`` as a bool mask ``[B, H, W]`` (the k largest pixels of each map; O(n) selection)."""
    a = as_map(a)
    _check_nan(a, "map")
    _check_k(k, a.shape[1] * a.shape[2])
    return _topk_mask(a, k)


def dilate(mask: Tensor, w: int) -> Tensor:
    """``N_w(S)``: 2-D dilation of a bool mask ``[B, H, W]`` by a w×w square (no wrap-around).

    Separable: OR of the mask shifted by ``1..w//2`` pixels along columns, then along rows;
    shifts drop what falls off the image, so nothing wraps across rows or borders (the same
    set as a stride-1 w×w max-pool with ``w//2`` padding).
    """
    _check_w(w)
    r = w // 2
    if mask.device.type == "cpu":  # same shifts in numpy (no torch CPU kernel launch per shift)
        m = _np(mask).astype(bool, copy=False)
        c = m.copy()
        for s in range(1, r + 1):
            c[..., s:] |= m[..., :-s]
            c[..., :-s] |= m[..., s:]
        o = c.copy()
        for s in range(1, r + 1):
            o[..., s:, :] |= c[..., :-s, :]
            o[..., :-s, :] |= c[..., s:, :]
        return torch.from_numpy(o)
    cols = mask.clone()
    for s in range(1, r + 1):
        cols[..., s:] |= mask[..., :-s]
        cols[..., :-s] |= mask[..., s:]
    out = cols.clone()
    for s in range(1, r + 1):
        out[..., s:, :] |= cols[..., :-s, :]
        out[..., :-s, :] |= cols[..., s:, :]
    return out


def topk_intersection(a: Tensor, b: Tensor, k: int) -> Tensor:
    """``|T_k(a) ∩ T_k(b)| / k`` per sample; ``[B, H, W] × [B, H, W] → [B]`` in [0, 1]."""
    a, b = check_pair(a, b)
    _check_k(k, a.shape[1] * a.shape[2])
    return _count(_topk_mask(a, k) & _topk_mask(b, k)) / k


def lens_topk(a: Tensor, b: Tensor, k: int, w: int = 3) -> tuple[Tensor, Tensor]:
    """LENS top-k (Kamath et al., "Rethinking Robustness of Model Attributions", AAAI 2024, arXiv:2312.10534) in both directions; each ``[B]`` in [0, 1].

    Returns ``(|N_w(T_k(a)) ∩ T_k(b)| / k, |T_k(a) ∩ N_w(T_k(b))| / k)``; their mean is the
    symmetric score. ``w`` odd (w=1 is plain top-k intersection).
    """
    a, b = check_pair(a, b)
    _check_w(w)
    _check_k(k, a.shape[1] * a.shape[2])
    ta, tb = _topk_mask(a, k), _topk_mask(b, k)
    fwd = _count(dilate(ta, w) & tb) / k
    bwd = _count(ta & dilate(tb, w)) / k
    return fwd, bwd


def topk_div_mask(a: Tensor, k: int, w: int = 3) -> Tensor:
    """Diverse top-k ``D_k(a)``: greedy picks with w×w exclusion windows; bool ``[B, H, W]``.

    Repeat k times: pick the highest remaining candidate pixel, then remove every pixel of
    its w×w window (clipped at the borders) from the candidates. Every pick is kept
    (the LENS paper's reference code drops the second pick; this does not). If the candidates
    run out before k picks (k too large for w), fewer than k pixels are selected and scores
    stay normalised by k.
    """
    a = as_map(a)
    _check_nan(a, "map")
    _check_w(w)
    B, H, W = a.shape
    _check_k(k, H * W)
    r = w // 2
    cand = a.to(torch.float64).flatten(1).clone()
    neg = torch.tensor(float("-inf"), dtype=cand.dtype, device=cand.device)
    picked = torch.zeros(B, H * W, dtype=torch.bool, device=a.device)
    rows = torch.arange(H, device=a.device).view(1, H, 1)
    cols = torch.arange(W, device=a.device).view(1, 1, W)
    for _ in range(k):
        val, idx = cand.max(dim=1)
        alive = val > neg  # rows that still have candidates
        picked.scatter_(1, idx[:, None], alive[:, None] | picked.gather(1, idx[:, None]))
        pr, pc = (idx // W).view(B, 1, 1), (idx % W).view(B, 1, 1)
        window = ((rows - pr).abs() <= r) & ((cols - pc).abs() <= r)
        cand = cand.masked_fill(window.flatten(1), float("-inf"))
    return picked.view(B, H, W)


def topk_div_intersection(a: Tensor, b: Tensor, k: int, w: int = 3) -> Tensor:
    """``|D_k(a) ∩ D_k(b)| / k``; ``[B]``."""
    a, b = check_pair(a, b)
    return (topk_div_mask(a, k, w) & topk_div_mask(b, k, w)).flatten(1).sum(1).to(torch.float32) / k


def lens_topk_div(a: Tensor, b: Tensor, k: int, w: int = 3) -> tuple[Tensor, Tensor]:
    """LENS on diverse top-k sets: ``(|N_w(D_k(a)) ∩ D_k(b)|/k, |D_k(a) ∩ N_w(D_k(b))|/k)``."""
    a, b = check_pair(a, b)
    da, db = topk_div_mask(a, k, w), topk_div_mask(b, k, w)
    fwd = (dilate(da, w) & db).flatten(1).sum(1).to(torch.float32) / k
    bwd = (da & dilate(db, w)).flatten(1).sum(1).to(torch.float32) / k
    return fwd, bwd


def _maxpool_map(a: Tensor, w: int) -> Tensor:
    """w×w max-pool (stride 1, borders not padded with values): ``[B, H, W] → [B, H, W]``."""
    _check_w(w)
    if w == 1:
        return a
    return F.max_pool2d(a.unsqueeze(1), kernel_size=w, stride=1, padding=w // 2).squeeze(1)


def lens_spearman(a: Tensor, b: Tensor, w: int = 3) -> Tensor:
    """Spearman ρ of the w×w max-pooled maps (robustattr's LENS-Spearman: the LENS neighbourhood of Kamath et al., AAAI 2024, applied to rank correlation); ``[B]``."""
    a, b = check_pair(a, b)
    return spearman(_maxpool_map(a, w), _maxpool_map(b, w))


def lens_kendall(a: Tensor, b: Tensor, w: int = 3, backend: str = "auto") -> Tensor:
    """Kendall τ-b of the w×w max-pooled maps (robustattr's LENS-Kendall: the LENS neighbourhood of Kamath et al., AAAI 2024, applied to rank correlation); ``[B]``."""
    a, b = check_pair(a, b)
    return kendall_tau(_maxpool_map(a, w), _maxpool_map(b, w), backend=backend)


# ---- vector metrics ------------------------------------------------------------------
def cosine_similarity(g: Tensor, h: Tensor) -> Tensor:
    """``⟨g, h⟩ / (‖g‖ ‖h‖)`` over flattened ``[B, ...]``; ``[B]``. Zero vectors: 1 if both, else 0."""
    if g.shape != h.shape:
        raise ValueError(f"inputs must have the same shape, got {tuple(g.shape)} and {tuple(h.shape)}")
    _check_nan(g, "first input")
    _check_nan(h, "second input")
    fg, fh = g.flatten(1).to(torch.float64), h.flatten(1).to(torch.float64)
    ng, nh = fg.norm(dim=1), fh.norm(dim=1)
    den = ng * nh
    cos = (fg * fh).sum(1) / torch.where(den > 0, den, torch.ones_like(den))
    zg, zh = ng == 0, nh == 0
    cos = torch.where(zg & zh, torch.ones_like(cos), torch.where(zg ^ zh, torch.zeros_like(cos), cos))
    return cos.clamp(-1.0, 1.0).to(torch.float32)


def mass_center(a: Tensor) -> Tensor:
    """``C(a) = Σ_p a_p · p / Σ_p a_p`` (float (row, col) coordinates); ``[B, H, W] → [B, 2]``.

    Uses ``|a|``; an all-zero map has centre ``((H−1)/2, (W−1)/2)``.
    """
    a = as_map(a).abs().to(torch.float64)
    _check_nan(a, "map")
    B, H, W = a.shape
    rows = torch.arange(H, dtype=a.dtype, device=a.device)
    cols = torch.arange(W, dtype=a.dtype, device=a.device)
    mass = a.sum(dim=(1, 2))
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    cr = (a.sum(2) * rows).sum(1) / safe
    cc = (a.sum(1) * cols).sum(1) / safe
    cr = torch.where(mass > 0, cr, torch.full_like(cr, (H - 1) / 2))
    cc = torch.where(mass > 0, cc, torch.full_like(cc, (W - 1) / 2))
    return torch.stack([cr, cc], dim=1).to(torch.float32)


def mass_center_dislocation(a: Tensor, b: Tensor) -> Tensor:
    """``‖C(a) − C(b)‖₂`` in pixels; ``[B]``."""
    a, b = check_pair(a, b)
    return (mass_center(a) - mass_center(b)).norm(dim=1)
