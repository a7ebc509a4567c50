"""Metrics against independent references: scipy rank correlations, numpy loops, hand-built maps."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from robustattr.metrics import (
    METRICS,
    CosineSimilarity,
    KendallTau,
    LENSTopK,
    MassCenterDislocation,
    SpearmanCorrelation,
    TopKIntersection,
    build_metric,
    kendall_tau,
    lens_topk,
    spearman,
    topk_intersection,
)
from robustattr.metrics import functional as RF


def _maps(ties: bool, B: int = 5, H: int = 6, W: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(B, H, W, generator=g)
    b = a + 0.7 * torch.rand(B, H, W, generator=g)
    if ties:  # heavy ties in both maps, including many zeros
        a = torch.clamp((a * 5).floor() - 1, min=0)
        b = (b * 3).floor()
    return a, b


def _np_maxpool(a: np.ndarray, w: int) -> np.ndarray:
    """Explicit-loop w×w max-pool over the in-image window."""
    H, W = a.shape
    r = w // 2
    out = np.empty_like(a)
    for i in range(H):
        for j in range(W):
            out[i, j] = a[max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1].max()
    return out


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("backend", ["torch", "scipy", "auto"])
def test_kendall_equals_scipy(ties: bool, backend: str) -> None:
    a, b = _maps(ties)
    ref = [scipy.stats.kendalltau(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic for i in range(len(a))]
    out = kendall_tau(a, b, backend=backend)
    assert out.shape == (len(a),)
    np.testing.assert_allclose(out.double().numpy(), ref, atol=1e-6)


def test_kendall_torch_larger_odd_size() -> None:
    # n = 37·29 (not a power of two: exercises the +inf padding of the merge-sort count)
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 20, (3, 37, 29), generator=g).float()
    b = a + torch.randint(0, 15, (3, 37, 29), generator=g).float()
    ref = [scipy.stats.kendalltau(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic for i in range(3)]
    np.testing.assert_allclose(kendall_tau(a, b, backend="torch").double().numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("ties", [False, True])
def test_spearman_equals_scipy(ties: bool) -> None:
    a, b = _maps(ties)
    ref = [scipy.stats.spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic for i in range(len(a))]
    np.testing.assert_allclose(spearman(a, b).double().numpy(), ref, atol=1e-6)
    # device path (pure torch ranks) gives the same values
    ra = RF._average_ranks(a.flatten(1).double())
    ref_ranks = np.stack([scipy.stats.rankdata(a[i].flatten().numpy()) for i in range(len(a))])
    np.testing.assert_allclose(ra.numpy(), ref_ranks)


@pytest.mark.parametrize("ties", [False, True])
def test_lens_rank_metrics_equal_scipy_on_pooled_maps(ties: bool) -> None:
    a, b = _maps(ties, B=3)
    pa = [_np_maxpool(a[i].numpy(), 3).flatten() for i in range(3)]
    pb = [_np_maxpool(b[i].numpy(), 3).flatten() for i in range(3)]
    ref_s = [scipy.stats.spearmanr(pa[i], pb[i]).statistic for i in range(3)]
    ref_k = [scipy.stats.kendalltau(pa[i], pb[i]).statistic for i in range(3)]
    np.testing.assert_allclose(RF.lens_spearman(a, b, 3).double().numpy(), ref_s, atol=1e-6)
    np.testing.assert_allclose(RF.lens_kendall(a, b, 3, backend="torch").double().numpy(), ref_k, atol=1e-6)


def test_constant_maps_convention_no_nan() -> None:
    z = torch.zeros(2, 5, 5)
    r = torch.rand(2, 5, 5)
    for fn in (kendall_tau, spearman, RF.lens_spearman, RF.lens_kendall):
        assert fn(z, z).tolist() == [1.0, 1.0]
        assert fn(z, r).tolist() == [0.0, 0.0]
    assert kendall_tau(z, z, backend="torch").tolist() == [1.0, 1.0]
    assert RF.cosine_similarity(z, z).tolist() == [1.0, 1.0]
    assert RF.cosine_similarity(z, r).tolist() == [0.0, 0.0]
    c = RF.mass_center(z)
    assert torch.allclose(c, torch.tensor([[2.0, 2.0], [2.0, 2.0]]))
    for fn2 in (lambda: topk_intersection(z, z, 3), lambda: lens_topk(z, z, 3, 3)[0], lambda: RF.topk_div_intersection(z, z, 3)):
        assert torch.isfinite(fn2()).all()


def _numpy_topk_set(a: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(-a.flatten(), kind="stable")[:k].tolist())


def test_topk_intersection_numpy_reference() -> None:
    a, b = _maps(False, B=4, H=8, W=8)
    k = 10
    ref = [len(_numpy_topk_set(a[i].numpy(), k) & _numpy_topk_set(b[i].numpy(), k)) / k for i in range(4)]
    np.testing.assert_allclose(topk_intersection(a, b, k).numpy(), ref)


def test_lens_one_pixel_shift_scores_one() -> None:
    a = torch.zeros(1, 8, 8)
    pts = [(2, 2), (2, 5), (5, 3), (6, 6)]
    for v, (i, j) in enumerate(pts):
        a[0, i, j] = 10.0 + v
    b = torch.roll(a, shifts=1, dims=2)  # every top pixel moves one column right (none at the border)
    k = 4
    assert topk_intersection(a, b, k).item() < 1.0
    fwd, bwd = lens_topk(a, b, k, 3)
    assert fwd.item() == 1.0 and bwd.item() == 1.0
    f1, b1 = lens_topk(a, b, k, 1)  # w=1 is plain top-k intersection
    assert f1.item() == topk_intersection(a, b, k).item() == b1.item()


def test_lens_no_wrap_around() -> None:
    H = W = 6
    a, b = torch.zeros(2, H, W), torch.zeros(2, H, W)
    a[0, 0, W - 1] = 1.0  # last pixel of row 0 ...
    b[0, 1, 0] = 1.0  # ... is next to the first pixel of row 1 in flattened order only
    a[1, 0, 2] = 1.0  # top border ...
    b[1, H - 1, 2] = 1.0  # ... and bottom border are not neighbours either
    fwd, bwd = lens_topk(a, b, 1, 3)
    assert fwd.tolist() == [0.0, 0.0] and bwd.tolist() == [0.0, 0.0]
    # dilation at a corner stays inside the image and covers exactly the 2×2 corner
    m = torch.zeros(1, H, W, dtype=torch.bool)
    m[0, 0, 0] = True
    d = RF.dilate(m, 3)
    assert d.sum().item() == 4 and d[0, :2, :2].all()


def _greedy_div_reference(a: np.ndarray, k: int, w: int) -> list[tuple[int, int]]:
    """Explicit greedy: highest remaining pixel, then drop its w×w window; in pick order."""
    H, W = a.shape
    r = w // 2
    alive = np.ones((H, W), dtype=bool)
    picks = []
    while len(picks) < k and alive.any():
        masked = np.where(alive, a, -np.inf)
        i, j = np.unravel_index(int(np.argmax(masked)), (H, W))
        picks.append((int(i), int(j)))
        alive[max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1] = False
    return picks


def test_topk_div_hand_built_greedy_order() -> None:
    a = torch.zeros(1, 7, 7)
    a[0, 1, 1] = 9.0  # pick 1
    a[0, 1, 2] = 8.5  # inside pick 1's window: never selected
    a[0, 4, 4] = 8.0  # pick 2 (the one seed 004's reference code skips)
    a[0, 5, 5] = 7.5  # inside pick 2's window
    a[0, 1, 5] = 7.0  # pick 3
    a[0, 5, 1] = 6.0  # pick 4
    mask = RF.topk_div_mask(a, 4, 3)[0]
    got = {tuple(p) for p in torch.nonzero(mask).tolist()}
    assert got == {(1, 1), (4, 4), (1, 5), (5, 1)}
    assert (4, 4) in got  # the second greedy pick is kept
    # plain top-k would pick the clustered pixels
    plain = {tuple(p) for p in torch.nonzero(RF.topk_mask(a, 4)[0]).tolist()}
    assert plain == {(1, 1), (1, 2), (4, 4), (5, 5)}


def test_topk_div_random_matches_loop_and_is_diverse() -> None:
    g = torch.Generator().manual_seed(5)
    a = torch.rand(3, 12, 12, generator=g)
    for w in (3, 5):
        mask = RF.topk_div_mask(a, 6, w)
        for i in range(3):
            ref = _greedy_div_reference(a[i].numpy(), 6, w)
            got = [tuple(p) for p in torch.nonzero(mask[i]).tolist()]
            assert set(got) == set(ref)
            for p in got:  # no two picks inside one w×w window
                for q in got:
                    if p != q:
                        assert max(abs(p[0] - q[0]), abs(p[1] - q[1])) > w // 2


def test_topk_div_runs_out_of_candidates() -> None:
    a = torch.rand(1, 3, 3)
    a[0, 1, 1] = 2.0  # the first pick's 3×3 window covers the whole image
    mask = RF.topk_div_mask(a, 5, 3)
    assert mask.sum().item() == 1 and mask[0, 1, 1]
    b = torch.rand(2, 5, 5, generator=torch.Generator().manual_seed(2))
    mb = RF.topk_div_mask(b, 20, 3)  # only a few 3×3-separated picks fit in 5×5
    for i in range(2):
        ref = _greedy_div_reference(b[i].numpy(), 20, 3)
        assert len(ref) < 20 and {tuple(p) for p in torch.nonzero(mb[i]).tolist()} == set(ref)


def test_mass_center_and_cosine_reference() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 5, 4, generator=g), torch.rand(3, 5, 4, generator=g)
    for i in range(3):
        m = a[i].numpy()
        ii, jj = np.meshgrid(np.arange(5), np.arange(4), indexing="ij")
        ref = np.array([(m * ii).sum() / m.sum(), (m * jj).sum() / m.sum()])
        np.testing.assert_allclose(RF.mass_center(a)[i].numpy(), ref, rtol=1e-5)
    ref_d = np.linalg.norm(RF.mass_center(a).numpy() - RF.mass_center(b).numpy(), axis=1)
    np.testing.assert_allclose(RF.mass_center_dislocation(a, b).numpy(), ref_d, rtol=1e-5)
    g4, h4 = torch.randn(3, 2, 5, 4, generator=g), torch.randn(3, 2, 5, 4, generator=g)
    ref_c = [np.dot(g4[i].flatten(), h4[i].flatten()) / np.linalg.norm(g4[i]) / np.linalg.norm(h4[i]) for i in range(3)]
    np.testing.assert_allclose(RF.cosine_similarity(g4, h4).numpy(), ref_c, rtol=1e-5)


def test_bad_inputs_raise() -> None:
    a = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="k must be"):
        topk_intersection(a, a, 17)
    with pytest.raises(ValueError, match="got 0"):
        topk_intersection(a, a, 0)
    with pytest.raises(ValueError, match="w must be .* got 2"):
        lens_topk(a, a, 3, 2)
    with pytest.raises(ValueError, match="w must be .* got -1"):
        lens_topk(a, a, 3, -1)
    with pytest.raises(ValueError, match="same shape"):
        spearman(a, torch.rand(2, 4, 5))
    bad = a.clone()
    bad[1, 0, 0] = float("nan")
    for fn in (kendall_tau, spearman, lambda x, y: topk_intersection(x, y, 3)):
        with pytest.raises(ValueError, match="NaN"):
            fn(a, bad)
    with pytest.raises(ValueError, match="w must be"):
        LENSTopK(k=3, w=4)
    with pytest.raises(ValueError, match="unknown metric"):
        build_metric("nope")


def test_torchmetrics_classes_accumulate_sum_states() -> None:
    a, b = _maps(False, B=6, H=8, W=8)
    metrics = [TopKIntersection(k=5), LENSTopK(k=5, w=3), SpearmanCorrelation(), KendallTau(), CosineSimilarity(), MassCenterDislocation()]
    for m in metrics:
        m.update(a[:4], b[:4])
        m.update(a[4:], b[4:])
        out = m.compute()
        # states are scalars (no list of maps)
        assert all(torch.as_tensor(getattr(m, s)).dim() == 0 for s in m._defaults)
        per = m.per_sample(a, b)
        if isinstance(out, dict):
            assert set(out) == {"fwd", "bwd", "mean"}
            for key in out:
                assert torch.allclose(out[key], per[key].mean(), atol=1e-6)
        else:
            assert torch.allclose(out, per["value"].mean(), atol=1e-6)
    ref = np.mean([scipy.stats.kendalltau(a[i].flatten(), b[i].flatten()).statistic for i in range(6)])
    assert abs(metrics[3].compute().item() - ref) < 1e-6
    assert set(METRICS) >= {"topk", "lens_topk", "topk_div", "lens_topk_div", "spearman", "kendall", "lens_spearman", "lens_kendall", "cosine", "mass_center"}
