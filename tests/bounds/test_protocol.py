"""Pieces of the worst-case bounds' validation protocol: the angle and the attacks it builds."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from robustattr.attacks import L2AttributionAttack, TopKAttack
from robustattr.attributions import Saliency
from robustattr.bounds import angle_deg, protocol_attacks


def test_angle_matches_float64_arccos_and_resolves_tiny_angles() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 1, 8, 8, generator=g)
    b = a + 0.5 * torch.randn(6, 1, 8, 8, generator=g)
    b[1], b[2], b[3] = 3 * a[1], 0.0, -a[3]
    ref = torch.rad2deg(torch.arccos(F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1, eps=1e-12).clamp(-1, 1)))
    torch.testing.assert_close(angle_deg(a, b).double(), ref, rtol=1e-5, atol=1e-4)
    assert angle_deg(a, b)[1] < 1e-5 and angle_deg(a, b)[2] == 90.0  # 3·a rounds in float32
    assert torch.equal(angle_deg(a, a.clone()), torch.zeros(6))
    # a rotation by θ = 1e-5 rad inside the plane of two orthonormal vectors (float32 arccos gives ~0.02°)
    u = torch.zeros(2, 64)
    u[:, 0] = 1.0
    theta = 1e-5
    v = torch.zeros(2, 64)
    v[:, 0], v[:, 1] = math.cos(theta), math.sin(theta)
    torch.testing.assert_close(angle_deg(u, v), torch.full((2,), math.degrees(theta)), rtol=1e-3, atol=0)


def test_protocol_attacks_follow_the_paper_settings() -> None:
    l2 = protocol_attacks(Saliency(), "l2", 0.1, repeats=3)
    assert len(l2) == 3 and all(isinstance(a, L2AttributionAttack) and a.steps == 20 and a.random_start for a in l2)
    assert l2[0].step_size == 2.5 * 0.1 / 20 and l2[0].surrogate_beta is None
    linf = protocol_attacks(Saliency(), "linf", 0.01, repeats=2, topk=1000, num_pixels=784)
    assert all(isinstance(a, TopKAttack) and a.steps == 200 and a.k == 784 for a in linf)
    assert [a.random_start for a in linf] == [False, True]
