"""Every shipped config parses and composes: each benchmark x model x reducer resolves its
classes without editing a file (parsing only: nothing is instantiated, no weights are loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dyto.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BENCHMARKS = sorted((CONFIGS / "benchmarks").glob("*.yaml"))
MODELS = sorted((CONFIGS / "models").glob("*.yaml"))
REDUCERS = sorted((CONFIGS / "reducers").glob("*.yaml"))
TRAINERS = sorted((CONFIGS / "trainer").glob("*.yaml"))


def printed_config(capsys, *files: Path) -> dict:
    args = ["predict"] + [a for f in files for a in ("--config", str(f))] + ["--print_config"]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_every_benchmark_has_a_config_naming_it():
    from dyto.datamodules.benchmarks import BENCHMARKS as REGISTERED

    assert {p.stem for p in BENCHMARKS} == set(REGISTERED)
    for path in BENCHMARKS:
        data = yaml.safe_load(path.read_text())["data"]
        assert data["class_path"] == "dyto.datamodules.VideoQADataModule", path
        assert data["init_args"]["benchmark"] == path.stem, path


@pytest.mark.parametrize("benchmark", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_configs_resolve(capsys, benchmark):
    cfg = printed_config(capsys, CONFIGS / "trainer" / "ddp.yaml", CONFIGS / "models" / "llava_next_7b.yaml",
                         CONFIGS / "reducers" / "dyto.yaml", benchmark)
    assert cfg["data"]["class_path"] == "dyto.datamodules.VideoQADataModule"
    assert cfg["data"]["init_args"]["benchmark"] == benchmark.stem
    assert cfg["model"]["reducer"]["class_path"] == "dyto.reduction.DyToReducer"
    assert cfg["trainer"]["strategy"] == "ddp"


@pytest.mark.parametrize("config", MODELS + REDUCERS + TRAINERS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_component_configs_compose_with_a_benchmark(capsys, config):
    cfg = printed_config(capsys, config, CONFIGS / "benchmarks" / "nextqa.yaml")
    assert cfg["data"]["class_path"] == "dyto.datamodules.VideoQADataModule"
    assert cfg["data"]["init_args"]["benchmark"] == "nextqa"


def test_default_reducer_is_the_release_dyto_and_is_saved(capsys):
    cfg = printed_config(capsys, CONFIGS / "models" / "tiny.yaml", CONFIGS / "benchmarks" / "nextqa.yaml")
    assert cfg["model"]["reducer"]["class_path"] == "dyto.reduction.DyToReducer"
    assert cfg["model"]["reducer"]["init_args"]["budget"] == 3680


def test_a_config_with_an_old_per_benchmark_class_still_parses(capsys, tmp_path):
    old = tmp_path / "old.yaml"  # as run folders written before the single DataModule hold it
    old.write_text("data:\n  class_path: dyto.datamodules.NExTQADataModule\n  init_args:\n    records: x.jsonl\n")
    cfg = printed_config(capsys, CONFIGS / "models" / "tiny.yaml", old)
    assert cfg["data"]["class_path"] == "dyto.datamodules.NExTQADataModule"
    from dyto.datamodules import NExTQADataModule

    assert NExTQADataModule(**cfg["data"]["init_args"]).benchmark == "nextqa"
