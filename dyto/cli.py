r"""The `dyto` command line.

    dyto predict --config configs/demo.yaml                     # LightningCLI: run a benchmark (here the demo)
    dyto predict --config configs/trainer/gpu.yaml --config configs/models/llava_next_7b.yaml \
                 --config configs/reducers/dyto.yaml --config configs/benchmarks/nextqa.yaml
    (configs/models/: llava_next_7b|34b, llava_onevision_7b, internvl3_8b, tiny_<family>)
    dyto prepare nextqa --qa-file NExT_QA.csv --out data/prepared/nextqa.jsonl --video-root DIR
    dyto synthetic [--out data/synthetic/test]    # generate the synthetic benchmark (clips, sheet, records)
    dyto judge --predictions outputs/<run> [--base-url URL] [--model NAME] [--temperature T] [--max-cost USD]
    dyto compare outputs/<run_a> outputs/<run_b> [--out DIR] [--baseline RUN]   # + paired tests
    dyto sweep --config configs/demo.yaml --reducers dyto slowfast:fast_grid=1 uniform fastvid holitom concat \
               --retention 0.1 0.25 0.5 --num-frames 16 --out outputs/sweep_demo   # reducer x budget grid
    dyto demo [--video clip.mp4 --question "what is happening?"] [--model PATH]   # default: tiny-trained
    dyto reduce-demo [--video clip.mp4]

`predict` goes to LightningCLI; `python cli.py ...` in the repository root is the same entry
point. Every command ends a wrong setting or a bad input file (a ``dyto.errors.UserError``, or
a parse or constructor error of the config) in one line, ``dyto: <key or file:line>: <problem>``,
and exit status 2; any other exception is a bug and keeps its traceback.
point. `dyto <command> --help` lists a command's options (`dyto predict --help` ends with the
DataModule's `--data.*`).
"""

from __future__ import annotations

import contextlib
import sys

from jsonargparse import ArgumentError, lazy_instance
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from dyto.errors import UserError, config_error, parser_error

# Inference only: the module has no training step, so fit/validate/test are not offered.
LIGHTNING_SUBCOMMANDS = ("predict",)
# parse errors are raised (and shown in one line by DyToCLI.parse_arguments), not printed with the usage
PARSER_KWARGS = {"exit_on_error": False}


class RunDirConfigSaver(SaveConfigCallback):
    """Save the effective config as `<run_dir>/config.yaml` (next to the predictions it made).

    The config holds no secrets by construction: API keys are read from the environment only
    (OPENAI_API_KEY, WANDB_API_KEY) and are never parameters.
    """

    def setup(self, trainer, pl_module, stage: str) -> None:
        from dyto.predict import find_writer

        if self.already_saved:
            return
        writer = find_writer(trainer)  # always present: DyToCLI adds it
        run_dir = writer.resolve_run_dir(trainer)
        writer.hold_lock(trainer)  # a refused run must not write over the holder's config
        if trainer.is_global_zero:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(run_dir / self.config_filename), skip_none=False, overwrite=True,
                             multifile=self.multifile)
        self.already_saved = True


class DyToCLI(LightningCLI):
    """LightningCLI with the prediction writer and the evaluation always wired in."""

    def __init__(self, *args, after_preflight=None, **kwargs):
        self.run_lock = contextlib.ExitStack()  # the run folder's lock, when taken before the model loads
        self.after_preflight = after_preflight  # dyto sweep: takes its --out lock there (and holds it)
        with self.run_lock:
            super().__init__(*args, **kwargs)

    def parse_arguments(self, parser, args) -> None:
        """jsonargparse's parse errors (a wrong type, an unknown key) as one line, not the usage dump."""
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as e:
            raise parser_error(str(e), "dyto predict") from None

    def instantiate_classes(self) -> None:
        """A constructor's error about a setting names the dotted key the user wrote."""
        try:
            super().instantiate_classes()
        except Exception as e:
            from dyto.callbacks import EvaluateCallback, PicturesCallback
            from dyto.evaluation.protocol import JudgeConfig
            from dyto.models.videoqa import VideoQA
            from dyto.predict import PredictionWriter

            config = (self.config[self.subcommand] if self.subcommand else self.config).as_dict()
            groups = {"model": VideoQA, "output": PredictionWriter, "pictures": PicturesCallback,
                      "evaluation": EvaluateCallback, "evaluation.judge": JudgeConfig}
            found = config_error(e, config, groups)
            if found is None:
                raise
            raise found from None

    def before_instantiate_classes(self) -> None:
        """Stop in one line, before any weights load, when the config cannot run here or its run
        folder is in use (``dyto predict`` with a run name; else the writer locks it in setup)."""
        from dyto.predict.writer import early_lock_dir
        from dyto.preflight import preflight
        from dyto.runs import RunFolder

        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False: not nested
        preflight(config.as_dict())
        if self.after_preflight is not None:
            self.after_preflight()
        if self.subcommand == "predict" and (run_dir := early_lock_dir(config.as_dict().get("output") or {})):
            self.run_lock.enter_context(RunFolder(run_dir).lock("dyto predict"))

    def after_predict(self) -> None:
        """Finish a rank whose predict loop never ran.

        Lightning skips the loop and its hooks on a rank with no batch: every rank on the rerun of
        a finished run, or some ranks when fewer questions are left than ranks. Such a rank meets
        the others at the writer's end-of-predict barrier here instead of in the loop (barriers
        pair by order, not name: nothing collective may run between them), and on rank 0 the
        merge and evaluation run here (e.g. to judge what an earlier run could not)."""
        from dyto.callbacks import EvaluateCallback
        from dyto.predict import find_writer

        writer = find_writer(self.trainer)
        if writer.ranks_done:
            return  # the loop ran; its callbacks merged and evaluated
        writer.on_predict_epoch_end(self.trainer, self.trainer.lightning_module)
        for cb in self.trainer.callbacks:
            if isinstance(cb, EvaluateCallback):
                cb.evaluate(self.trainer)

    def add_arguments_to_parser(self, parser) -> None:
        from dyto.callbacks import EvaluateCallback
        from dyto.callbacks import PicturesCallback
        from dyto.predict import PredictionWriter
        from dyto.reduction import DyToReducer

        # the release DyTo unless a reducer config says otherwise; shown in the saved config
        parser.set_defaults({"model.reducer": lazy_instance(DyToReducer)})
        parser.add_lightning_class_args(PredictionWriter, "output")
        parser.add_lightning_class_args(PicturesCallback, "pictures")
        parser.add_lightning_class_args(EvaluateCallback, "evaluation")
        _append_data_help(parser)


def _append_data_help(parser) -> None:
    """`--help` ends with the DataModule's options: in subclass mode jsonargparse lists only
    `--data` and `--data.help CLASS`, which hides `--data.records`, `--data.limit`, ..."""
    format_help = parser.format_help

    def with_data() -> str:
        from jsonargparse import ArgumentParser

        from dyto.datamodules import VideoQADataModule

        data = ArgumentParser(prog="", description="")
        data.add_class_arguments(VideoQADataModule, "data")
        sections = data.format_help().split("\n\n")[1:]  # no usage line, no -h / --data CONFIG
        options = "\n".join(line for line in "\n\n".join(s for s in sections if not s.startswith("options:"))
                            .splitlines()[1:] if not line.startswith("  --data CONFIG "))
        return (format_help() + "\nThe DataModule's options (dyto.datamodules.VideoQADataModule, chosen by a "
                "benchmark config or --data VideoQADataModule; each also as --data.init_args.<name>):\n" + options)

    parser.format_help = with_data


def run_lightning(argv: list[str]) -> None:
    import warnings

    from dyto.datamodules import VideoQADataModule
    from dyto.models.videoqa import VideoQA

    with warnings.catch_warnings():
        # main(argv) from Python (tests, notebooks) passes its own argv on purpose; LightningCLI
        # would warn that sys.argv (the host's, e.g. pytest's or the kernel's) is also set.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        DyToCLI(
            VideoQA,  # the backbone is chosen in YAML: model.backbone (class_path or registry name)
            VideoQADataModule,
            subclass_mode_data=True,
            save_config_callback=RunDirConfigSaver,
            seed_everything_default=0,
            trainer_defaults={"logger": False, "enable_checkpointing": False},
            args=argv,
            auto_configure_optimizers=False,
            parser_kwargs={**PARSER_KWARGS, "predict": PARSER_KWARGS},
        )


def build_for_sweep(argv: list[str], after_preflight=None):
    """`dyto predict`'s options (--config, --model.*, --data.*, ...) -> (module, datamodule, trainer,
    config dict, EvaluateCallback), built by the same parser and preflight, for `dyto sweep`;
    ``after_preflight()`` runs once the config passed the preflight, before the model loads."""
    import warnings

    from dyto.callbacks.evaluate import find_evaluator
    from dyto.datamodules import VideoQADataModule
    from dyto.models.videoqa import VideoQA

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = DyToCLI(VideoQA, VideoQADataModule, after_preflight=after_preflight, subclass_mode_data=True, run=False,
                      save_config_callback=None,
                      seed_everything_default=0, trainer_defaults={"logger": False, "enable_checkpointing": False},
                      args=argv, auto_configure_optimizers=False, parser_kwargs=PARSER_KWARGS)
    return cli.model, cli.datamodule, cli.trainer, cli.config.as_dict(), find_evaluator(cli.trainer)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    try:
        run_command(argv[0], argv[1:])
    except UserError as e:  # the one handler: a setting or an input file to fix, in one line
        for line in e.lines():
            print(f"dyto: {line}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None


def run_command(cmd: str, rest: list[str]) -> None:
    if cmd in LIGHTNING_SUBCOMMANDS:
        run_lightning([cmd, *rest])
    elif cmd == "prepare":
        from dyto.datamodules.prepare import main as prepare_main

        sys.exit(prepare_main(rest))
    elif cmd == "synthetic":
        from dyto.datamodules.synthetic import main as synthetic_main

        sys.exit(synthetic_main(rest))
    elif cmd == "judge":
        from dyto.evaluation.judge_cli import judge_main

        sys.exit(judge_main(rest))
    elif cmd == "compare":
        from dyto.evaluation.compare import compare_main

        sys.exit(compare_main(rest))
    elif cmd == "sweep":
        from dyto.evaluation.sweep import sweep_main

        sys.exit(sweep_main(rest, build_for_sweep))
    elif cmd == "demo":
        from dyto.demo import demo_main

        sys.exit(demo_main(rest))
    elif cmd == "reduce-demo":
        from dyto.demo import reduce_demo_main

        sys.exit(reduce_demo_main(rest))
    else:
        raise UserError(f"unknown command {cmd!r}; try `dyto --help`")


if __name__ == "__main__":
    main()
