"""Every shipped loss config parses with the CLI; the digits ones instantiate and train two steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import robustattr.losses as losses
from robustattr.apps.train import build_cli

REPO = Path(__file__).resolve().parents[2]
OBJECTIVES = {
    "pgd": ("PGDAdversarialLoss", {"ce"}),
    "trades": ("TRADESLoss", {"ce", "kl"}),
    "ignorm": ("IGNormLoss", {"ce", "ig_norm"}),
    "igsumnorm": ("IGNormLoss", {"ce", "ig_norm"}),
    "art": ("ARTLoss", {"ce", "triplet"}),
    "igr": ("IGRLoss", {"ce", "cos_gap"}),
    "trades_igr": ("IGRLoss", {"ce", "kl", "cos_gap"}),
    "ssr": ("SSRLoss", {"ce", "lambda_max"}),
}


@pytest.mark.parametrize("prefix", ["digits_smallcnn", "mnist_smallcnn", "cifar10_resnet18"])
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_loss_config_selects_and_validates_the_objective(prefix: str, name: str) -> None:
    """The YAML names the right class; its init_args construct it (ValueError-free) directly."""
    cfg = yaml.safe_load((REPO / "configs" / f"{prefix}_{name}.yaml").read_text())
    spec = cfg["model"]["loss"]
    cls_name, _ = OBJECTIVES[name]
    assert spec["class_path"] == f"robustattr.losses.{cls_name}"
    loss = getattr(losses, cls_name)(**spec.get("init_args", {}))
    if name == "igsumnorm":
        assert loss.sum_norm
    if name == "trades_igr":
        assert loss.base == "trades" and loss.inner == "kl"


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_digits_config_instantiates_with_cli_and_trains(name: str, tmp_path: Path) -> None:
    cls_name, terms = OBJECTIVES[name]
    cli = build_cli(
        [
            "--config", str(REPO / "configs" / f"digits_smallcnn_{name}.yaml"),
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path),
            "--model.backbone.init_args.width", "4", "--model.backbone.init_args.hidden", "16",
        ],
        run=False,
    )
    module = cli.model
    assert type(module.loss).__name__ == cls_name
    cli.datamodule.setup("fit")
    x, y = next(iter(cli.datamodule.train_dataloader()))
    x, y = x[:6], y[:6]
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    module.train()
    before = [p.detach().clone() for p in module.parameters()]
    for _ in range(2):
        opt.zero_grad()
        out = module.loss(module.model, x, y)
        assert set(out.terms) == terms
        assert torch.isfinite(out.loss)
        out.loss.backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))
