"""study.py end to end: a 2-cell, 2-step study (train → evaluate → table → rerun skips), refusals, SLURM, dry run."""

from __future__ import annotations

import fcntl
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from robustattr.apps.study import load_study, main, markdown_tables, run_cell, table_columns

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "configs" / "experiment" / "digits_smallcnn.yaml"
TINY_TRAIN = ["--trainer.max_epochs=1", "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
              "--trainer.num_sanity_val_steps=0", "--data.init_args.batch_size=8"]


def write_study(tmp: Path, **changes: object) -> Path:
    spec = {
        "name": "tiny",
        "output": str(tmp / "out"),
        "seed": 0,
        "threads": 1,
        "configs": [str(EXPERIMENT)],
        "objectives": {"standard": {}, "ssr": {"overrides": ["--model.loss=robustattr.losses.SSRLoss",
                                                             "--model.loss.init_args.beta=0.1"]}},
        "train": {"overrides": TINY_TRAIN},
        "wandb": {"enabled": True, "project": "study-test"},
        "evaluation": {
            "split": "test", "num_samples": 3, "batch_size": 2,
            "evaluators": {
                "accuracy": {"num_samples": 4},
                "attribution_attack@small": {"attacks": {"topk": {"class_path": "robustattr.attacks.TopKAttack", "init_args": {
                    "attribution": {"class_path": "robustattr.attributions.Saliency"}, "eps": 0.1, "steps": 2,
                    "step_size": 0.05, "k": 20}}}, "metrics": ["topk", "kendall"]},
                "smoothing": {"radius": 16.0, "n_samples": 16, "eps_grid": [0.01, 0.1], "taus": [0.5], "num_samples": 2},
                "targets": {"targets": ["trades_kl", "ssr_lambda_max"], "eps": 0.1, "steps": 1},
            },
        },
    }
    spec.update(changes)
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_two_cell_study_end_to_end_then_rerun_skips_both_cells(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_study(tmp_path)
    main(["run", str(path)])
    first = capsys.readouterr().out
    out = tmp_path / "out"
    data = json.loads((out / "study.json").read_text())
    assert sorted(data["cells"]) == ["ssr", "standard"] and data["missing"] == []
    for name, cell in data["cells"].items():
        metrics = json.loads((out / "cells" / name / "train" / "train_metrics.json").read_text())
        assert cell["status"] == "done" and cell["steps"] == 2 and len(metrics["step_times"]) == 2
        assert cell["step_time"] == pytest.approx(metrics["step_times"][1])  # the first (warm-up) step is left out
        acc = cell["evaluations"]["accuracy"]["summary"]["accuracy"]
        rows = (out / "cells" / name / "eval" / "accuracy" / "accuracy.tsv").read_text().splitlines()[1:]
        assert len(rows) == 4 and acc == pytest.approx(sum(r.split("\t")[3] == "True" for r in rows) / 4)
        assert set(cell["evaluations"]) == {"accuracy", "attribution_attack@small", "smoothing", "targets"}
        assert 0.0 <= cell["evaluations"]["attribution_attack@small"]["summary"]["topk/topk"] <= 1.0
    # the same seeded test subset for every cell
    idx = {n: (out / "cells" / n / "eval" / "targets" / "targets.tsv").read_text().splitlines()[1:] for n in data["cells"]}
    assert [r.split("\t")[0] for r in idx["ssr"]] == [r.split("\t")[0] for r in idx["standard"]]
    assert data["cells"]["standard"]["values"]["cost"] == pytest.approx(1.0)
    assert data["cells"]["ssr"]["values"]["cost"] > 0
    md = (out / "study.md").read_text()
    assert "| standard |" in md and "| ssr |" in md and "**" in md and "SSR: λ_max" in md
    assert {p.name for p in (out / "plots").iterdir()} == {"certified_cosine_vs_eps.png", "topk_vs_accuracy.png", "training_curves.png"}
    assert any((out / "wandb").rglob("*.wandb"))
    assert "training" in first
    stamp = {n: (out / "cells" / n / "train" / "checkpoints" / "final.ckpt").stat().st_mtime_ns for n in data["cells"]}
    main(["run", str(path)])
    again = capsys.readouterr().out
    assert again.count("skipping training") == 2 and "on 3 test samples" not in again
    assert stamp == {n: (out / "cells" / n / "train" / "checkpoints" / "final.ckpt").stat().st_mtime_ns for n in data["cells"]}
    # a changed configuration in the same output is refused before any work, with one line
    changed = write_study(tmp_path, seed=1)
    with pytest.raises(SystemExit) as err:
        main(["run", str(changed)])
    assert err.value.code == 2
    msg = capsys.readouterr().err.strip()
    assert len(msg.splitlines()) == 1 and "another configuration" in msg and "cell standard" in msg


def test_slurm_array_and_merge_scripts_are_valid_bash(tmp_path: Path) -> None:
    path = write_study(tmp_path, slurm={"options": {"gres": "gpu:4", "ntasks-per-node": 4}})
    main(["run", str(path), "--launcher", "slurm", "--quiet"])
    array = (tmp_path / "out" / "slurm" / "array.sbatch").read_text()
    assert "#SBATCH --array=0-1" in array and "#SBATCH --gres=gpu:4" in array and "CELLS=(standard ssr)" in array
    assert "--cell \"${CELLS[$SLURM_ARRAY_TASK_ID]}\" --no-report" in array
    for name in ("array.sbatch", "merge.sbatch"):
        subprocess.run(["bash", "-n", str(tmp_path / "out" / "slurm" / name)], check=True)
    assert " report " in (tmp_path / "out" / "slurm" / "merge.sbatch").read_text()


def test_dry_run_prints_the_plan_and_estimates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_study(tmp_path)
    main(["run", str(path), "--dry-run", "--cell", "standard"])
    text = capsys.readouterr().out
    assert "standard:" in text and "estimated total" in text and "evaluator smoothing" in text
    assert not (tmp_path / "out" / "cells").exists()


def test_bad_study_files_are_refused_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for changes, word in [({"objectives": {}}, "objectives"), ({"colour": 1}, "unknown keys"),
                          ({"configs": ["missing.yaml"]}, "not found")]:
        with pytest.raises(SystemExit):
            main(["run", str(write_study(tmp_path, **changes)), "--quiet"])
        assert word in capsys.readouterr().err
    study = load_study(write_study(tmp_path))
    cols = table_columns(study)
    assert [c.label for c in cols][:3] == ["clean acc.", "top-k ∩ (topk, small)", "Kendall (topk, small)"]
    assert "# Study tiny" in markdown_tables(study, {"name": "tiny", "cells": {}, "missing": ["standard"], "versions": {}})


def test_a_cell_run_by_another_process_is_refused(tmp_path: Path) -> None:
    study = load_study(write_study(tmp_path))
    folder = study.output / "cells" / "standard"
    folder.mkdir(parents=True)
    with open(folder / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="being run by another process"):
            run_cell(study.cells[0], study, {"sha256": "0" * 64, "config": ""}, quiet=True)
    assert not (folder / "train").exists()
