"""Per-sample random streams: results that do not depend on how samples are batched or sharded.

Evaluation callbacks seed each sample's noise by ``base_seed + dataset_index``, so 1 process
and 2 DDP processes (or batch 8 vs batch 64) draw identical noise for every sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def per_sample_generators(seeds: Sequence[int] | Tensor, device: torch.device | str) -> list[torch.Generator]:
    """One ``torch.Generator`` on ``device`` per seed."""
    seeds_list = seeds.tolist() if isinstance(seeds, Tensor) else list(seeds)
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds_list]


def per_sample_noise(
    sampler: Callable[..., Tensor],
    seeds: Sequence[int] | Tensor,
    n: int,
    shape: tuple[int, ...],
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    **kwargs: object,
) -> Tensor:
    """``[n, B, *shape]`` noise whose column ``b`` is ``sampler(n, shape, generator=G(seeds[b]), ...)``.

    ``sampler`` is any of ``sample_l2_ball``/``sample_gaussian``/``sample_linf_cube`` (their
    signature ``(n, shape, radius_or_sigma, generator, device, dtype)``); extra ``kwargs``
    are passed by name (e.g. ``radius=0.5``). The loop is over samples only (one call per
    sample draws all n of its rows), so its cost is B small kernel launches.
    """
    gens = per_sample_generators(seeds, device)
    cols = [sampler(n, shape, generator=g, device=device, dtype=dtype, **kwargs) for g in gens]
    return torch.stack(cols, dim=1)
