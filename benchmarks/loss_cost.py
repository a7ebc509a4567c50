"""Cost of one training step of each robust objective against the primitive passes it is made of.

    .venv/bin/python benchmarks/loss_cost.py            # SmallCNN/digits + resnet18 at 32×32
    .venv/bin/python benchmarks/loss_cost.py --quick    # 3 inner steps, batch 32 × 5 pairs (resnet: 2 × 3), 1 thread

A robust objective is a fixed composition of a few *primitive passes* (forward, input gradient,
input gradient with ``create_graph=True`` followed by a second backward, ...) at known row counts.
A double backward costs several times a forward+backward (3–5× on SmallCNN with softplus on a
CPU), so counting passes says little; instead, every primitive the objective needs is timed in
the same run, on the same network and mode, at the row count the objective uses, and

    primitive_ratio = (measured training step) / Σ_p count_p · (measured time of primitive p)

is reported per objective and model. The training step is what ``RobustClassifier.training_step``
and Lightning's automatic optimisation do: ``zero_grad``, ``loss(model, x, y)``, ``backward``,
``optimizer.step``, model in train mode. What is left above 1 is bookkeeping (projections,
random starts, mode switches, the contract's checks, Python overhead); target ≤ 1.15.

Primitives (each on random inputs in [0, 1] with ``rows`` rows; the network's mode is set before
the timer starts; "orig" is the trained network (ReLU, max-pooling), "sur" its smooth surrogate
``softplus_surrogate(orig, β)``: Softplus(β) and log-mean-exp pooling with the objective's β):

- ``forward``: one forward under ``no_grad``, eval mode.
- ``input_grad``: eval mode; ``∇_z Σ_i CE(f(z_i), y_i)`` by ``autograd.grad`` (no parameter gradients).
- ``input_grad2_input``: eval mode; ``g = ∇_z Σ_i f_{y_i}(z_i)`` with ``create_graph=True``, then
  ``∇_z Σ|g|`` (one step of a second-order inner maximisation).
- ``train_fwd_bwd``: train mode; ``CE(f(x), y).backward()`` (parameter gradients).
- ``input_grad2_params``: train mode; ``g = ∇_z Σ_i f_{y_i}(z_i)`` with ``create_graph=True`` (``z``
  a leaf, as the folded path points of the objectives are), then ``Σ|g|.backward()``.
- ``optimizer``: ``optimizer.step()`` and ``zero_grad(set_to_none=True)``.

Compositions, derived from the code of ``robustattr/losses`` (S inner steps, m IG points, n = m/approx
inner loss-IG points, m_in inner IG points, K classes, B batch); the contract probe is the one
no-grad eval-mode forward at ``x`` with which every objective checks the model output once per
call (TRADES and TRADES+IGR reuse its logits as ``p(x)`` of the KL ascent, ``probe_logits``).
Before timing, each composition is checked against the code: one training step runs with forward
hooks on the network and on its surrogate, and the multiset of (network, rows) of the forwards it
makes must equal the one the composition implies, or the script stops (``forward_calls_checked``).

- ``standard``: train_fwd_bwd(orig, B) + optimizer.
- ``pgd_at``: forward(orig, B) [probe] + S·input_grad(orig, B) [PGD steps] + train_fwd_bwd(orig, B)
  [CE at x'] + optimizer.
- ``trades``: forward(orig, B) [p(x) of the inner KL, which is also the contract check]
  + S·input_grad(orig, B) [KL ascent] + 2·train_fwd_bwd(orig, B) [separate forwards at x and x']
  + optimizer.
- ``ig_norm``: forward(orig, B) [probe] + S·input_grad2_input(sur, n·B) [‖IGᴸ‖₁ ascent, n path
  points folded] + input_grad2_params(orig, m·B) [outer ‖IGᴸ‖₁] + train_fwd_bwd(orig, B) [CE at x]
  + optimizer.
- ``ig_sum_norm``: forward(orig, B) [probe] + S·(input_grad2_input(sur, n·B) + input_grad(sur, B))
  [CE + β‖IGᴸ‖₁ ascent] + input_grad2_params(orig, m·B) + train_fwd_bwd(orig, B) [CE at x*]
  + optimizer.
- ``art``: forward(orig, B) [probe] + input_grad(sur, 2B) [clean positive/negative gradients,
  ``[x; x]``] + S·input_grad2_input(sur, 2B) [triplet ascent] + input_grad2_params(orig, 4B)
  [outer gradients of ``[x; x'; x; x']``, whose logits also give the CE] + optimizer.
- ``igr`` (inner "attribution"): forward(orig, B) [probe] + input_grad(sur, m_in·B) [IG(x)]
  + S·input_grad2_input(sur, m_in·B) [cosine-gap ascent] + train_fwd_bwd(orig, B) [CE at x]
  + input_grad2_params(orig, 2m·B) [IG of ``[x; x']``] + optimizer.
- ``trades_igr`` (inner "kl"): forward(orig, B) [p(x), the contract check] + S·input_grad(orig, B)
  + 2·train_fwd_bwd(orig, B) + input_grad2_params(orig, 2m·B) + optimizer.
- ``ssr``: train_fwd_bwd(orig, B) [CE and p(x)] + input_grad2_params(orig, K·B) [K-copy logit
  Jacobian, differentiated through λ_max] + optimizer.

Timing: per objective one warm-up pair, then ``pairs`` interleaved pairs (the step first in even
pairs, the primitives first in odd ones, so drifting machine load hits both alike). In a pair every
primitive is run once and its time multiplied by its count. On a CPU the clock is the process's
CPU time (``time.process_time``; run it with one thread): on a shared machine wall-clock time
mostly measures how long the process waited for a core, CPU time what it computed (cache and
memory-bandwidth contention from other processes still leak in). On a GPU it is wall-clock time
with synchronisation. The JSON gives the median of the pairwise ratios with their min and max,
``ratio_of_minima`` (fastest step ÷ Σ fastest primitives), the medians of both sides, each
primitive's median time, the step time relative to StandardLoss's (``step_vs_standard``), the
thread count and ``os.getloadavg()`` before and after each model. Writes
``benchmarks/results/loss_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustattr.models import softplus_surrogate
from robustattr.registry import build

OUT = Path(__file__).resolve().parent / "results" / "loss_cost.json"
TARGET = 1.15
OBJECTIVES = ("standard", "pgd_at", "trades", "ig_norm", "ig_sum_norm", "art", "igr", "trades_igr", "ssr")


@dataclass(frozen=True)
class Primitive:
    """One primitive pass: ``kind`` on ``net`` ("orig" | "sur") with ``rows`` rows, ``count`` times per step."""

    kind: str
    net: str
    rows: int
    count: int
    role: str


@dataclass(frozen=True)
class Settings:
    """Inner steps S, IG points m, approx, inner IG points m_in, ART steps, classes K."""

    steps: int
    ig_steps: int
    approx: int
    inner_ig_steps: int
    art_steps: int
    num_classes: int = 10


def make_objective(name: str, s: Settings) -> tuple[object, float | None]:
    """``(loss, β of its surrogate or None)`` built through the registry with the benchmark's budgets."""
    S, m, approx, m_in = s.steps, s.ig_steps, s.approx, s.inner_ig_steps
    kw: dict[str, object] = {
        "standard": {},
        "pgd_at": {"eps": 0.3, "step_size": 0.3 / S, "steps": S},
        "trades": {"eps": 0.3, "step_size": 0.3 / S, "steps": S},
        "ig_norm": {"eps": 0.3, "step_size": 0.3 / S, "steps": S, "ig_steps": m, "approx": approx},
        "ig_sum_norm": {"eps": 0.3, "step_size": 0.3 / S, "steps": S, "ig_steps": m, "approx": approx},
        "art": {"steps": s.art_steps},
        "igr": {"eps": 0.3, "step_size": 0.3 / S, "steps": S, "ig_steps": m, "inner_ig_steps": m_in},
        "trades_igr": {"eps": 0.3, "step_size": 0.3 / S, "steps": S, "ig_steps": m, "inner_ig_steps": m_in},
        "ssr": {},
    }[name]  # type: ignore[assignment]
    loss = build("loss", name, **kw)  # type: ignore[arg-type]
    beta = getattr(loss, "softplus_beta", None) if name in ("ig_norm", "ig_sum_norm", "art", "igr") else None
    return loss, beta


def composition(name: str, s: Settings, B: int) -> list[Primitive]:
    """The primitive passes of one training step of objective ``name`` (see the module docstring)."""
    S, m, n, m_in, K = s.steps, s.ig_steps, s.ig_steps // s.approx, s.inner_ig_steps, s.num_classes
    P = Primitive
    probe = P("forward", "orig", B, 1, "contract probe: no-grad forward at x")
    opt = P("optimizer", "orig", 0, 1, "optimizer step + zero_grad")
    fb = P("train_fwd_bwd", "orig", B, 1, "CE forward+backward")
    comps = {
        "standard": [fb, opt],
        "pgd_at": [probe, P("input_grad", "orig", B, S, "PGD steps"), P("train_fwd_bwd", "orig", B, 1, "CE at x'"), opt],
        "trades": [
            P("forward", "orig", B, 1, "p(x) for the KL ascent (= contract check)"),
            P("input_grad", "orig", B, S, "KL ascent steps"),
            P("train_fwd_bwd", "orig", B, 2, "separate forwards at x and x' + backward"),
            opt,
        ],
        "ig_norm": [
            probe,
            P("input_grad2_input", "sur", n * B, S, "‖IGᴸ‖₁ ascent, n path points folded"),
            P("input_grad2_params", "orig", m * B, 1, "outer ‖IGᴸ‖₁, m path points folded"),
            P("train_fwd_bwd", "orig", B, 1, "CE at x"),
            opt,
        ],
        "ig_sum_norm": [
            probe,
            P("input_grad2_input", "sur", n * B, S, "β‖IGᴸ‖₁ part of the ascent"),
            P("input_grad", "sur", B, S, "CE part of the ascent"),
            P("input_grad2_params", "orig", m * B, 1, "outer ‖IGᴸ‖₁, m path points folded"),
            P("train_fwd_bwd", "orig", B, 1, "CE at x*"),
            opt,
        ],
        "art": [
            probe,
            P("input_grad", "sur", 2 * B, 1, "clean positive/negative gradients on [x; x]"),
            P("input_grad2_input", "sur", 2 * B, s.art_steps, "triplet ascent on [z; z]"),
            P("input_grad2_params", "orig", 4 * B, 1, "outer gradients of [x; x'; x; x'] (+ CE from its logits)"),
            opt,
        ],
        "igr": [
            probe,
            P("input_grad", "sur", m_in * B, 1, "IG(x), m_in points"),
            P("input_grad2_input", "sur", m_in * B, S, "cosine-gap ascent, m_in points"),
            P("train_fwd_bwd", "orig", B, 1, "CE at x"),
            P("input_grad2_params", "orig", 2 * m * B, 1, "IG of [x; x'], m points"),
            opt,
        ],
        "trades_igr": [
            P("forward", "orig", B, 1, "p(x) for the KL ascent (= contract check)"),
            P("input_grad", "orig", B, S, "KL ascent steps"),
            P("train_fwd_bwd", "orig", B, 2, "separate forwards at x and x' + backward"),
            P("input_grad2_params", "orig", 2 * m * B, 1, "IG of [x; x'], m points"),
            opt,
        ],
        "ssr": [
            P("train_fwd_bwd", "orig", B, 1, "CE and p(x) at x"),
            P("input_grad2_params", "orig", K * B, 1, "K-copy logit Jacobian through λ_max"),
            opt,
        ],
    }
    return comps[name]


def expected_forwards(comp: list[Primitive]) -> list[tuple[str, int]]:
    """Sorted ``(net, rows)`` of every network forward that composition ``comp`` implies."""
    calls = [(p.net, p.rows) for p in comp if p.kind != "optimizer" for _ in range(p.count)]
    return sorted(calls)


def observed_forwards(loss: Callable[..., object], model: nn.Module, beta: float | None, x: Tensor,
                      y: Tensor) -> list[tuple[str, int]]:
    """Sorted ``(net, rows)`` of every forward of ``model`` ("orig") and of its surrogate ("sur") that
    one call ``loss(model, x, y)`` plus its backward makes (forward hooks on both top-level modules)."""
    calls: list[tuple[str, int]] = []
    nets = {"orig": model}
    if beta is not None:
        nets["sur"] = softplus_surrogate(model, beta)  # type: ignore[arg-type]
    handles = [net.register_forward_hook(lambda _m, inp, _o, tag=tag: calls.append((tag, int(inp[0].shape[0]))))
               for tag, net in nets.items()]
    try:
        loss(model, x, y).loss.backward()  # type: ignore[attr-defined]
    finally:
        for h in handles:
            h.remove()
    model.zero_grad(set_to_none=True)
    return sorted(calls)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Bench:
    """Times training steps and primitives of one model on one batch."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor) -> None:
        self.model, self.x, self.y = model.train(), x, y
        self.device = x.device
        self.opt = torch.optim.SGD(model.parameters(), lr=1e-4)
        self._inputs: dict[int, tuple[Tensor, Tensor]] = {}

    def inputs(self, rows: int) -> tuple[Tensor, Tensor]:
        """Random ``[rows, C, H, W]`` in [0, 1] and labels ``[rows]`` (cached per row count)."""
        if rows not in self._inputs:
            g = torch.Generator().manual_seed(rows)
            z = torch.rand(rows, *self.x.shape[1:], generator=g).to(self.device)
            yy = torch.randint(0, 10, (rows,), generator=g).to(self.device)
            self._inputs[rows] = (z, yy)
        return self._inputs[rows]

    def timed(self, fn: Callable[[], object]) -> float:
        """Seconds of ``fn()``: process CPU time on a CPU device (what this process computed, not the
        time it waited for a core on a shared machine), wall-clock time with synchronisation on a GPU."""
        _sync(self.device)
        clock = time.process_time if self.device.type == "cpu" else time.perf_counter
        t0 = clock()
        fn()
        _sync(self.device)
        return clock() - t0

    def step(self, loss: Callable[..., object]) -> float:
        """One training step as Lightning runs it: zero_grad, loss, backward, optimizer step."""
        self.model.train()

        def run() -> None:
            self.opt.zero_grad(set_to_none=True)
            loss(self.model, self.x, self.y).loss.backward()  # type: ignore[attr-defined]
            self.opt.step()

        return self.timed(run)

    def primitive(self, p: Primitive, beta: float | None) -> float:
        """Seconds of one run of ``p`` (mode set and gradients cleared before the timer starts)."""
        model = self.model
        net = model if p.net == "orig" else softplus_surrogate(model, beta)  # type: ignore[arg-type]
        if p.kind == "optimizer":
            if next(model.parameters()).grad is None:  # the step needs gradients to apply
                self.primitive(Primitive("train_fwd_bwd", "orig", self.x.shape[0], 1, ""), None)
            return self.timed(lambda: (self.opt.step(), self.opt.zero_grad(set_to_none=True)))
        z0, yy = self.inputs(p.rows)
        train = p.kind in ("train_fwd_bwd", "input_grad2_params")
        model.train(train)
        net.train(train)
        self.opt.zero_grad(set_to_none=True)

        def forward() -> None:
            with torch.no_grad():
                net(z0)

        def input_grad() -> None:
            z = z0.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(net(z), yy, reduction="sum"), z)

        def first_order(z: Tensor) -> Tensor:
            sel = net(z).gather(1, yy.view(-1, 1)).sum()
            (g,) = torch.autograd.grad(sel, z, create_graph=True)
            return g.abs().sum()

        def input_grad2_input() -> None:
            z = z0.detach().requires_grad_(True)
            torch.autograd.grad(first_order(z), z)

        def train_fwd_bwd() -> None:
            F.cross_entropy(net(z0), yy).backward()

        def input_grad2_params() -> None:
            first_order(z0.detach().requires_grad_(True)).backward()

        fns = {"forward": forward, "input_grad": input_grad, "input_grad2_input": input_grad2_input,
               "train_fwd_bwd": train_fwd_bwd, "input_grad2_params": input_grad2_params}
        t = self.timed(fns[p.kind])
        model.train()
        return t


def bench_objective(b: Bench, name: str, s: Settings, pairs: int) -> dict[str, object]:
    """Warm-up pair, then ``pairs`` interleaved (step, Σ primitives) pairs."""
    loss, beta = make_objective(name, s)
    comp = composition(name, s, b.x.shape[0])
    seen, want = observed_forwards(loss, b.model.train(), beta, b.x, b.y), expected_forwards(comp)  # type: ignore[arg-type]
    if seen != want:
        raise RuntimeError(f"{name}: the composition is stale: the loss runs forwards {seen}, "
                           f"the composition implies {want}")
    steps: list[float] = []
    sums: list[float] = []
    prim_times: list[list[float]] = [[] for _ in comp]

    def prims() -> float:
        ts = [b.primitive(p, beta) for p in comp]
        for lst, t in zip(prim_times, ts, strict=True):
            lst.append(t)
        return sum(p.count * t for p, t in zip(comp, ts, strict=True))

    b.step(loss), prims()  # type: ignore[arg-type]  # warm-up (allocator, surrogate cache, lazy init)
    for lst in prim_times:
        lst.clear()
    for i in range(pairs):
        if i % 2 == 0:
            steps.append(b.step(loss))  # type: ignore[arg-type]
            sums.append(prims())
        else:
            sums.append(prims())
            steps.append(b.step(loss))  # type: ignore[arg-type]
    ratios = [a / c for a, c in zip(steps, sums, strict=True)]
    return {
        "loss": repr(loss),
        "composition": [
            {"primitive": p.kind, "net": {"orig": "original", "sur": f"softplus surrogate (beta={beta})"}[p.net],
             "rows": p.rows, "count": p.count, "role": p.role, "median_s": round(statistics.median(t), 6)}
            for p, t in zip(comp, prim_times, strict=True)
        ],
        "step_s": round(statistics.median(steps), 6),
        "primitives_s": round(statistics.median(sums), 6),
        "primitive_ratio": {"median": round(statistics.median(ratios), 4), "min": round(min(ratios), 4),
                            "max": round(max(ratios), 4)},
        "ratio_of_minima": round(min(steps) / sum(p.count * min(t) for p, t in zip(comp, prim_times, strict=True)), 4),
        "pair_ratios": [round(r, 4) for r in ratios],
        "forward_calls_checked": len(seen),
        "pairs": pairs,
    }


def bench_model(label: str, model: nn.Module, x: Tensor, y: Tensor, s: Settings, pairs: int,
                names: tuple[str, ...]) -> dict[str, object]:
    b = Bench(model, x, y)
    print(f"{label}: batch {x.shape[0]}, {x.device}", flush=True)
    out: dict[str, object] = {"batch": int(x.shape[0]), "loadavg_before": list(os.getloadavg())}
    res: dict[str, dict[str, object]] = {}
    for name in names:
        r = bench_objective(b, name, s, pairs)
        res[name] = r
        pr = r["primitive_ratio"]
        print(f"  {name:12s} step {r['step_s']:8.4f} s  Σ primitives {r['primitives_s']:8.4f} s  "
              f"primitive_ratio {pr['median']:.3f} [{pr['min']:.3f}, {pr['max']:.3f}]", flush=True)  # type: ignore[index]
    if "standard" in res:
        std = float(res["standard"]["step_s"])  # type: ignore[arg-type]
        for r in res.values():
            r["step_vs_standard"] = round(float(r["step_s"]) / std, 3)  # type: ignore[arg-type]
    out["loadavg_after"] = list(os.getloadavg())
    out["objectives"] = res
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 inner steps, batch 32, 5 pairs (resnet: batch 2, 3 pairs), 1 thread")
    p.add_argument("--steps", type=int, default=None, help="inner steps S of every objective (default 10, quick 3)")
    p.add_argument("--pairs", type=int, default=None, help="timed (step, primitives) pairs (default 10, quick 5)")
    p.add_argument("--batch", type=int, default=None, help="SmallCNN batch (default 64, quick 32)")
    p.add_argument("--resnet-batch", type=int, default=None, help="resnet18 batch (default 16, quick 2)")
    p.add_argument("--resnet-pairs", type=int, default=None, help="timed pairs on resnet18 (default --pairs, quick 3)")
    p.add_argument("--no-resnet", action="store_true", help="SmallCNN only")
    p.add_argument("--no-smallcnn", action="store_true", help="resnet18 only")
    p.add_argument("--merge", action="store_true",
                   help="keep the other model's section of an existing --out written with the same settings "
                        "(so that the two models can run as separate processes)")
    p.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated registry names")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's; quick 1)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    s = Settings(steps=a.steps or (3 if a.quick else 10), ig_steps=10, approx=5, inner_ig_steps=5, art_steps=3)
    pairs = a.pairs or (5 if a.quick else 10)
    names = tuple(n.strip() for n in a.objectives.split(",") if n.strip())
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        p.error(f"--objectives: unknown {unknown}; choose from {OBJECTIVES}")
    device = torch.device(a.device)
    threads = a.threads or (1 if a.quick and device.type == "cpu" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)

    from robustattr.data.digits import load_digits_tensors
    from robustattr.models import SmallCNN, TimmBackbone, build_model

    out: dict[str, object] = {
        "benchmark": "loss_cost",
        "target": f"primitive_ratio <= {TARGET} (step time / Σ of its primitive passes measured in the same run)",
        "clock": "process CPU time (time.process_time)" if device.type == "cpu" else "wall clock, synchronised",
        "settings": {"inner_steps": s.steps, "ig_steps": s.ig_steps, "approx": s.approx,
                     "inner_ig_steps": s.inner_ig_steps, "art_steps": s.art_steps, "num_classes": s.num_classes,
                     "pairs": pairs, "warmup_pairs": 1, "quick": a.quick, "device": str(device),
                     "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                     "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "loadavg_start": list(os.getloadavg()),
    }
    xd, yd = load_digits_tensors(28)
    batch = a.batch or (32 if a.quick else 64)
    x, y = xd[:batch].to(device), yd[:batch].to(device)
    model = build_model(SmallCNN(), (0.3,), (0.3,)).to(device)
    if not a.no_smallcnn:
        out["smallcnn_digits"] = bench_model("SmallCNN / digits 28x28", model, x, y, s, pairs, names)
    if not a.no_resnet:
        rb = a.resnet_batch or (2 if a.quick else 16)
        rpairs = a.resnet_pairs or (3 if a.quick and a.pairs is None else pairs)
        g = torch.Generator().manual_seed(0)
        xr = torch.rand(rb, 3, 32, 32, generator=g).to(device)
        yr = torch.randint(0, 10, (rb,), generator=g).to(device)
        torch.manual_seed(0)
        net = build_model(TimmBackbone("resnet18", num_classes=10, in_channels=3, pretrained=False, cifar_stem=True),
                          (0.5,) * 3, (0.25,) * 3).to(device)
        out["resnet18_32"] = bench_model("resnet18 (CIFAR stem) 32x32", net, xr, yr, s, rpairs, names)
    out["loadavg_end"] = list(os.getloadavg())
    if a.merge and a.out.exists():
        old = json.loads(a.out.read_text())
        if old.get("benchmark") == "loss_cost" and old.get("settings") == out["settings"]:
            for k in ("smallcnn_digits", "resnet18_32"):
                if k not in out and k in old:
                    out[k] = old[k]
    worst = [(k, n, r["primitive_ratio"]["median"]) for k in ("smallcnn_digits", "resnet18_32") if k in out  # type: ignore[index]
             for n, r in out[k]["objectives"].items()]  # type: ignore[index,union-attr]
    out["above_target"] = [f"{k}/{n}: {v}" for k, n, v in worst if v > TARGET]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
