"""configs/: every experiment resolves, digits experiments train one step, links, line budget, console, errors.

The experiments compose group files by relative path (``model: {loss: ../loss/mnist/pgd.yaml}``);
these tests go through the CLI's own parser (in-process, one parser for all ``--print_config``
runs) so that what is checked is what ``python train.py fit --config …`` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml

import robustattr.losses as losses
from robustattr.apps.train import (
    RobustCLI,
    build_cli,
    checkpoint_line,
    metrics_table,
    train_main,
    training_summary,
)
from robustattr.config import instantiate

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
DIGITS = [n for n in EXPERIMENTS if n.startswith("digits_")]
LINE_BUDGET = 700  # non-comment, non-blank YAML lines in all of configs/

# objective file name -> (class, loss terms it logs)
OBJECTIVES = {
    "pgd": ("PGDAdversarialLoss", {"ce"}),
    "trades": ("TRADESLoss", {"ce", "kl"}),
    "ignorm": ("IGNormLoss", {"ce", "ig_norm"}),
    "igsumnorm": ("IGSumNormLoss", {"ce", "ig_norm"}),
    "art": ("ARTLoss", {"ce", "triplet"}),
    "igr": ("IGRLoss", {"ce", "cos_gap"}),
    "trades_igr": ("TRADESIGRLoss", {"ce", "kl", "cos_gap"}),
    "ssr": ("SSRLoss", {"ce", "lambda_max"}),
}
THREAT_MODELS = ("digits", "mnist", "cifar")
# Per-experiment callback prefixes that one training step must log.
CALLBACK_PREFIXES = {
    "digits_smallcnn_attr_eval": ("val_attr/",),
    "digits_smallcnn_certify": ("val_cert/",),
    "digits_smallcnn_bounds": ("val_bound/",),
    "digits_smallcnn_all_callbacks": ("val_attr/", "val_cert/", "val_bound/"),
}


class _ParseOnlyCLI(RobustCLI):
    """The CLI stopped after parsing: its parser is reused for every ``--print_config`` below."""

    def instantiate_classes(self) -> None:
        return None


@pytest.fixture(scope="module")
def parser() -> Any:
    args = ["--model.backbone", "robustattr.models.SmallCNN", "--data", "robustattr.data.DigitsDataModule"]
    return build_cli(args, run=False, cli_class=_ParseOnlyCLI).parser


def _print_config(parser: Any, args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        parser.parse_args([*args, "--print_config"])
    out = capsys.readouterr()
    assert info.value.code in (0, None), out.err[-3000:]
    return yaml.safe_load(out.out)


def _experiment(name: str) -> str:
    return str(CONFIGS / "experiment" / f"{name}.yaml")


# --------------------------------------------------------------------------- every experiment resolves


def test_experiment_list_is_complete() -> None:
    """Every experiment of the flat layout it replaced still exists under the same base name."""
    expected = {"digits_smallcnn", "mnist_smallcnn", "cifar10_resnet18", "imagenet_resnet50",
                "digits_smallcnn_attr_eval", "digits_smallcnn_certify", "digits_smallcnn_bounds",
                "digits_smallcnn_all_callbacks", "cifar10_resnet18_certify", "imagenet_resnet50_certify"}
    expected |= {f"{p}_{o}" for p in ("digits_smallcnn", "mnist_smallcnn", "cifar10_resnet18") for o in OBJECTIVES}
    assert set(EXPERIMENTS) == expected
    assert not list(CONFIGS.glob("*.yaml")), "experiments live in configs/experiment/, not at the top level"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_resolves_with_print_config(name: str, parser: Any, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _print_config(parser, ["--config", _experiment(name)], capsys)
    dataset, arch = name.split("_")[:2]
    data_cls = {"digits": "DigitsDataModule", "mnist": "MNISTDataModule", "cifar10": "CIFAR10DataModule",
                "imagenet": "ImageFolderDataModule"}[dataset]
    assert cfg["data"]["class_path"] == f"robustattr.data.{data_cls}"
    backbone = cfg["model"]["backbone"]
    assert backbone["class_path"] == ("robustattr.models.SmallCNN" if arch == "smallcnn" else "robustattr.models.TimmBackbone")
    # Group paths were read (nothing left as a file name) and the linked values are not in the file.
    text = yaml.safe_dump(cfg)
    assert ".yaml" not in text
    assert not {"num_classes", "in_channels", "input_size"} & set(backbone.get("init_args", {}))
    assert cfg["trainer"]["inference_mode"] is False
    objective = name.split(f"{dataset}_{arch}_", 1)[1] if name.count("_") >= 2 else ""
    if objective in OBJECTIVES:
        assert cfg["model"]["loss"]["class_path"] == f"robustattr.losses.{OBJECTIVES[objective][0]}"
    if objective in ("certify", "attr_eval", "bounds", "all_callbacks"):
        assert cfg["trainer"]["callbacks"], "the monitoring experiment has no callback"


def test_configs_compose_and_append(parser: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Later --config files override earlier ones; trainer snippets apply to any experiment."""
    cfg = _print_config(parser, ["--config", _experiment("digits_smallcnn"),
                                 "--config", str(CONFIGS / "trainer" / "ddp_cpu.yaml"),
                                 "--config", str(CONFIGS / "trainer" / "csv_logger.yaml"),
                                 "--model.loss", str(CONFIGS / "loss" / "digits" / "trades.yaml")], capsys)
    assert cfg["trainer"]["strategy"] == "ddp" and cfg["trainer"]["devices"] == 2
    assert cfg["trainer"]["logger"]["class_path"] == "lightning.pytorch.loggers.CSVLogger"
    assert cfg["trainer"]["max_epochs"] == 5  # from the experiment, not overridden
    assert cfg["model"]["loss"]["class_path"] == "robustattr.losses.TRADESLoss"
    assert cfg["model"]["loss"]["init_args"]["step_size"] == 0.05


def test_callbacks_append_from_the_command_line(parser: Any, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _print_config(parser, ["--config", _experiment("digits_smallcnn_certify"),
                                 "--trainer.callbacks+", str(CONFIGS / "callbacks" / "bounds.yaml")], capsys)
    names = [cb["class_path"].rsplit(".", 1)[1] for cb in cfg["trainer"]["callbacks"]]
    assert names == ["CertificationCallback", "WorstCaseBoundCallback"]


# --------------------------------------------------------------------------- loss groups


@pytest.mark.parametrize("threat", THREAT_MODELS)
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_loss_group_selects_and_validates_the_objective(threat: str, name: str) -> None:
    """The YAML names the right class; its init_args construct it (ValueError-free) directly."""
    spec = yaml.safe_load((CONFIGS / "loss" / threat / f"{name}.yaml").read_text())
    cls_name, _ = OBJECTIVES[name]
    assert spec["class_path"] == f"robustattr.losses.{cls_name}"
    loss = getattr(losses, cls_name)(**spec.get("init_args", {}))
    if name == "igsumnorm":
        assert loss.sum_norm
    if name == "trades_igr":
        assert loss.base == "trades" and loss.inner == "kl"
    if name != "ssr":  # the threat model's ℓ∞ budget: 8/255 (TRADES' 0.031) for CIFAR, 0.3 for MNIST, 0.1 for digits
        eps = spec["init_args"]["eps"]
        expected = {"cifar": pytest.approx(8 / 255, abs=5e-4), "mnist": pytest.approx(0.3), "digits": pytest.approx(0.1)}
        assert eps == expected[threat]


def test_loss_groups_mirror_each_other() -> None:
    names = {t: sorted(p.stem for p in (CONFIGS / "loss" / t).glob("*.yaml")) for t in THREAT_MODELS}
    assert all(v == sorted(OBJECTIVES) for v in names.values()), names


# --------------------------------------------------------------------------- digits experiments train


def _shrink_callbacks(callbacks: list[dict]) -> None:
    """Tiny subsets and budgets so that one validation of every callback takes seconds."""
    for cb in callbacks:
        if not cb["class_path"].endswith("Callback"):  # schedules (BudgetWarmup) have no subset
            continue
        args = cb.setdefault("init_args", {})
        args["num_samples"], args["batch_size"], args["progress"] = 2, 2, False
        ev = args.get("evaluator") or {}
        ev = ev.get("init_args", ev)
        if "n_samples" in ev:
            ev["n_samples"], ev["rows_per_forward"] = 16, 16
        if "iters" in ev:
            ev["iters"] = 5
        for attack in (ev.get("attacks") or {}).values():
            attack.setdefault("init_args", {})["steps"] = 2


@pytest.mark.parametrize("name", DIGITS)
def test_digits_experiment_trains_one_step(name: str, parser: Any, capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    cfg = _print_config(parser, ["--config", _experiment(name)], capsys)
    _shrink_callbacks(cfg["trainer"].get("callbacks") or [])
    cfg["trainer"].pop("logger", None)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cli = build_cli(["--config", str(path), "--trainer.fast_dev_run", "1", "--trainer.logger", "false",
                     "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                     "--trainer.default_root_dir", str(tmp_path), "--data.init_args.batch_size", "8",
                     "--model.backbone.init_args.width", "4", "--model.backbone.init_args.hidden", "16"], run=False)
    module, trainer = cli.model, cli.trainer
    objective = name.removeprefix("digits_smallcnn_")
    cls_name, terms = OBJECTIVES.get(objective, ("StandardLoss", {"ce"}))
    assert type(module.loss).__name__ == cls_name
    before = [p.detach().clone() for p in module.parameters()]
    trainer.fit(module, datamodule=cli.datamodule)
    assert trainer.global_step == 1
    metrics = trainer.callback_metrics
    assert {f"train/{t}" for t in terms} <= set(metrics), sorted(metrics)
    assert all(torch.isfinite(metrics[f"train/{t}"]) for t in terms)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))
    summary = training_summary(trainer, "fit")
    for prefix in ("val/", *CALLBACK_PREFIXES.get(name, ())):
        assert any(k.startswith(prefix) for k in metrics), (prefix, sorted(metrics))
        assert f"\n{prefix}" in summary, summary


# --------------------------------------------------------------------------- links: no mismatch possible


@pytest.mark.parametrize(
    ("model", "data", "shape", "k"),
    [("smallcnn", "cifar10", (3, 32, 32), 10), ("smallcnn", "gtsrb", (3, 32, 32), 43),
     ("smallcnn", "digits", (1, 28, 28), 10), ("resnet18_cifar", "digits", (1, 28, 28), 10)],
)
def test_backbone_takes_its_shape_from_the_data(model: str, data: str, shape: tuple[int, ...], k: int) -> None:
    """num_classes / in_channels / input_size come from the DataModule, even against explicit values."""
    spec = yaml.safe_load((CONFIGS / "model" / f"{model}.yaml").read_text())
    spec["init_args"].update({"num_classes": 7, "in_channels": 5} | ({"input_size": 12, "width": 4} if model == "smallcnn" else {}))
    text = yaml.safe_dump({"model": {"backbone": spec}, "data": f"../data/{data}.yaml"})
    module, dm = instantiate(text, base_dir=CONFIGS / "experiment")  # no data is read
    assert (dm.num_classes, dm.in_channels) == (k, shape[0])
    with torch.no_grad():
        assert module.model.eval()(torch.rand(2, *shape)).shape == (2, k)
    torch.testing.assert_close(module.model[0].mean.flatten(), torch.tensor(dm.mean))


# --------------------------------------------------------------------------- budget


def _yaml_lines(root: Path) -> int:
    n = 0
    for path in root.rglob("*.yaml"):
        n += sum(1 for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return n


def test_configs_line_budget() -> None:
    n = _yaml_lines(CONFIGS)
    assert 0 < n <= LINE_BUDGET, f"configs/ holds {n} non-comment lines (budget {LINE_BUDGET}): compose groups instead of copying"


# --------------------------------------------------------------------------- console summary


def test_metrics_table_sorted_aligned_and_filtered() -> None:
    metrics = {"val_cert/cos_median@eps=0.001": torch.tensor(0.75), "train/loss": torch.tensor(1.0),
               "val/acc": torch.tensor(0.9512345), "val_attr/topk/kendall": 0.25, "val_bound/T_e": torch.tensor(3e-7),
               "validation_other": torch.tensor(1.0), "test/acc": torch.tensor(0.5)}
    lines = metrics_table(metrics, "val").splitlines()
    keys = [ln.split()[0] for ln in lines[2:]]
    assert keys == ["val/acc", "val_attr/topk/kendall", "val_bound/T_e", "val_cert/cos_median@eps=0.001"]
    assert len({len(ln) for ln in lines}) == 1  # aligned columns
    assert lines[2].split()[1] == "0.951235" and lines[4].split()[1] == "3e-07"
    assert metrics_table(metrics, "test").splitlines()[2].split() == ["test/acc", "0.5"]
    assert metrics_table({"train/loss": 1.0}, "val") == ""


def test_checkpoint_line_best_last_and_none() -> None:
    def trainer(**cb: Any) -> SimpleNamespace:
        ckpt = SimpleNamespace(**{"monitor": None, "mode": "min", "best_model_path": "", "last_model_path": "", **cb})
        return SimpleNamespace(checkpoint_callback=ckpt, fast_dev_run=False)

    assert checkpoint_line(trainer(monitor="val/acc", mode="max", best_model_path="b.ckpt", last_model_path="l.ckpt")) \
        == "best checkpoint (val/acc, mode=max): b.ckpt"
    assert checkpoint_line(trainer(best_model_path="e4.ckpt", last_model_path="last.ckpt")) == "last checkpoint: last.ckpt"
    assert checkpoint_line(trainer(best_model_path="e4.ckpt")) == "last checkpoint: e4.ckpt"
    assert checkpoint_line(SimpleNamespace(checkpoint_callback=None)).startswith("checkpoint: none")
    assert checkpoint_line(SimpleNamespace(checkpoint_callback=trainer().checkpoint_callback, fast_dev_run=1)) \
        == "last checkpoint: none saved (fast_dev_run)"
    done = SimpleNamespace(ckpt_path="x.ckpt", callback_metrics={"val/acc": torch.tensor(0.5), "test/acc": 0.25})
    assert training_summary(done, "validate").splitlines()[1:] == [
        "=== validate finished ===", "validated checkpoint: x.ckpt", "metric   value", "-------  -----", "val/acc    0.5"]
    assert training_summary(done, "test").splitlines()[2:3] == ["tested checkpoint: x.ckpt"]


def test_fit_prints_checkpoint_and_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_main(["fit", "--config", _experiment("digits_smallcnn"), "--trainer.max_epochs", "1",
                "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2", "--trainer.logger", "false",
                "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
                "--model.backbone.init_args.width", "4", "--model.backbone.init_args.hidden", "16"])
    out = capsys.readouterr().out.split("=== fit finished ===", 1)[1].splitlines()
    assert out[1].startswith("last checkpoint: ")
    ckpt = Path(out[1].split(": ", 1)[1])
    assert ckpt.is_file() and ckpt.suffix == ".ckpt" and tmp_path in ckpt.parents
    rows = {ln.split()[0]: float(ln.split()[1]) for ln in out[4:] if ln.strip()}
    assert set(rows) == {"val/acc", "val/loss"} and 0.0 <= rows["val/acc"] <= 1.0


# --------------------------------------------------------------------------- one-line errors


def _error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if "error:" in ln or "Traceback" in ln]


def test_bad_loss_hyper_parameter_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTATTR_DEBUG", "0")  # restored (unset) after the test; --debug below sets it
    args = ["fit", "--config", _experiment("digits_smallcnn_pgd"), "--model.loss.init_args.steps", "-3",
            "--trainer.logger", "false"]
    with pytest.raises(SystemExit) as info:
        train_main(args)
    assert info.value.code == 2
    lines = _error_lines(capsys.readouterr().err)
    assert lines == ["train.py: error: PGDAdversarialLoss: steps must be an integer >= 1, got -3"], lines
    with pytest.raises(ValueError, match="steps"):  # --debug: the traceback, not the one line
        train_main([*args, "--debug"])


def test_missing_dataset_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        train_main(["fit", "--config", _experiment("mnist_smallcnn"), "--data.init_args.data_dir", str(tmp_path),
                    "--trainer.fast_dev_run", "1", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                    "--trainer.default_root_dir", str(tmp_path)])
    assert info.value.code == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("train.py: error: MNIST dataset not found at "), lines
    assert str(tmp_path) in lines[0] and "download=True" in lines[0]


def test_usage_errors_keep_jsonargparse_form(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        train_main(["fit", "--config", _experiment("digits_smallcnn_pgd"), "--model.loss.init_args.bogus", "1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "train.py: error:" not in err


def test_error_line_from_the_real_entry_point(tmp_path: Path) -> None:
    """``python train.py`` itself: exit status 2, the message last on stderr, no traceback."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}
    env.pop("ROBUSTATTR_DEBUG", None)
    out = subprocess.run([sys.executable, str(REPO / "train.py"), "fit", "--config", _experiment("digits_smallcnn_trades"),
                          "--model.loss.init_args.eps", "-0.1", "--trainer.logger", "false"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("train.py: error: TRADESLoss: eps"), out.stderr[-2000:]


def test_readme_help_example_works(capsys: pytest.CaptureFixture[str]) -> None:
    """README: ``python train.py fit --model.loss.help robustattr.losses.TRADESLoss``."""
    readme = (REPO / "README.md").read_text()
    assert "--model.loss.help robustattr.losses.TRADESLoss" in readme
    with pytest.raises(SystemExit) as info:
        build_cli(["fit", "--model.loss.help", "robustattr.losses.TRADESLoss"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--model.loss.beta" in out and "--model.loss.start_sigma" in out
