"""Every backbone config composes with every reducer and benchmark config (parsing only: nothing is
instantiated, no weights are loaded), and the registry name form parses too."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import pytest
import yaml

from dyto.cli import DyToCLI, main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = sorted((CONFIGS / "models").glob("*.yaml"))
REDUCERS = sorted((CONFIGS / "reducers").glob("*.yaml"))
BENCHMARKS = sorted((CONFIGS / "benchmarks").glob("*.yaml"))


class _ParseOnlyCLI(DyToCLI):
    def instantiate_classes(self) -> None:  # the parser is all these tests need
        pass


@pytest.fixture(scope="module")
def parser():
    from dyto.datamodules import VideoQADataModule
    from dyto.models.videoqa import VideoQA

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # pytest's own argv
        cli = _ParseOnlyCLI(VideoQA, VideoQADataModule, subclass_mode_data=True, run=False, save_config_callback=None,
                            auto_configure_optimizers=False, args=["--config", str(CONFIGS / "demo_random.yaml")])
    return cli.parser


def backbone_of(model_yaml: Path) -> str:
    return yaml.safe_load(model_yaml.read_text())["model"]["backbone"]["class_path"]


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.stem)
def test_done_when_command_parses(capsys, model):
    """`dyto predict --config configs/models/X.yaml --config configs/reducers/dyto.yaml
    --config configs/benchmarks/nextqa.yaml --print_config` for every model config."""
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--config", str(model), "--config", str(CONFIGS / "reducers" / "dyto.yaml"),
              "--config", str(CONFIGS / "benchmarks" / "nextqa.yaml"), "--print_config"])
    assert exit_.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["backbone"]["class_path"] == backbone_of(model)
    assert cfg["model"]["reducer"]["init_args"]["budget"] == 3680


def test_every_family_has_a_tiny_config():
    import importlib

    from dyto.models.backbone import BACKBONES, list_backbones

    def resolve(class_path: str):
        module, _, name = class_path.rpartition(".")
        return getattr(importlib.import_module(module), name)

    tiny = {resolve(backbone_of(p)) for p in MODELS if p.stem.startswith("tiny_")}
    assert {BACKBONES[name] for name in list_backbones()} <= tiny


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.stem)
def test_model_x_reducer_and_model_x_benchmark(parser, model):
    for extra in [[r, CONFIGS / "benchmarks" / "nextqa.yaml"] for r in REDUCERS] + \
                 [[CONFIGS / "reducers" / "dyto.yaml", b] for b in BENCHMARKS]:
        cfg = parser.parse_args([a for f in [model, *extra] for a in ("--config", str(f))])
        assert cfg.model.backbone.class_path == backbone_of(model)
        assert cfg.model.reducer.class_path.startswith("dyto.reduction.")
        assert cfg.data.class_path.startswith("dyto.datamodules.")


@pytest.mark.slow
def test_every_backbone_x_reducer_x_benchmark(parser):
    for model, reducer, bench in itertools.product(MODELS, REDUCERS, BENCHMARKS):
        cfg = parser.parse_args(["--config", str(model), "--config", str(reducer), "--config", str(bench)])
        assert cfg.model.backbone.class_path == backbone_of(model), (model, reducer, bench)


def test_a_registry_name_selects_a_backbone(parser):
    cfg = parser.parse_args(["--config", str(CONFIGS / "demo_random.yaml"), "--model.backbone", "internvl"])
    assert cfg.model.backbone == "internvl"


@pytest.mark.parametrize("family", ["llava_next", "llava_onevision", "internvl"])
def test_the_tiny_dyto_config_merges_on_the_tiny_grids(family):
    """dyto.yaml's 3680 tokens exceed what 25 kept frames of a 4x4 grid hold (400): nothing merges.
    dyto_tiny.yaml's 102 (3680's share of 100 x 16) does, as the real budget does on 24x24."""
    import torch

    from dyto.models.backbone import build_backbone
    from dyto.reduction import build_reducer

    grid = build_backbone(family).grid
    assert grid == (4, 4)
    features = torch.randn(100, 16, 32, generator=torch.Generator().manual_seed(0))
    for config, merges in (("dyto_tiny.yaml", True), ("dyto.yaml", False)):
        args = yaml.safe_load((CONFIGS / "reducers" / config).read_text())["model"]["reducer"]["init_args"]
        red = build_reducer("dyto", **args)(features, grid)
        assert (max(red.info["r_list"]) > 0) == merges, (config, red.info["r_list"])  # r <= 0: no merge
        assert red.tokens.shape[0] <= args["budget"]
