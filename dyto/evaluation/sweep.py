"""`dyto sweep`: a reducer x budget grid on one benchmark, every video decoded and encoded once.

    dyto sweep --config configs/demo.yaml --reducers dyto slowfast:fast_grid=1 uniform fastvid holitom concat \\
               --retention 0.1 0.25 0.5 --num-frames 16 --out outputs/sweep_demo
    dyto sweep --config configs/trainer/gpu.yaml --config configs/models/llava_next_7b.yaml \\
               --config configs/benchmarks/nextqa.yaml --reducers dyto slowfast fastvid holitom concat \\
               --target-tokens 1024 2048 3680 --out outputs/sweep_nextqa

`--config` and every other `--model.*` / `--data.*` / `--trainer.*` / `--evaluation.*` option are
those of `dyto predict` (the same parser); the reducer of the config is replaced by each cell's.
A reducer is a registry name, optionally with parameters (`slowfast:fast_grid=1,slow_frames=4`),
optionally followed by an inner-LLM stage (`dycoke+dycoke_kv`, `concat+fastv:layer=2,ratio=0.5`: the
whole method); a cell without `+stage` runs without one, whatever the config says. `--match flops`
raises each whole method's outer budget until its prefill FLOPs equal those of the budget's token
count without a stage (``match_flops``), so whole methods compare at equal compute.
Each cell (reducer, budget) is an ordinary run folder `<out>/<cell>/` with its own fingerprint,
rank log, merged predictions, summary and evaluation, so `dyto compare`, `dyto judge` and
`dyto.api.load_run` read it; `concat` in the grid adds the unreduced cell `concat-unreduced`,
the default baseline of the "% of the unreduced run" column.

Unlike a `dyto predict` per cell, the questions are grouped by (video, window): each group is
decoded once (the DataModule's own dataset, in its workers), encoded once by the model, and
its features, kept in memory for that group only, feed every cell's reducer, prompt and
generation (``VideoQA.use_features`` + ``predict_step``: the per-question code path of a
run). So every cell samples the same `--num-frames` frames. A rerun skips each (cell,
question) already ``ok`` and decodes only the videos some cell still needs; a cell folder made
with other settings stops the sweep (``SettingsChanged``) before anything is predicted.
Writes `<out>/sweep.md`, `<out>/sweep.json` and `<out>/sweep.png` (see ``sweep_report``).

One sweep per `--out` at a time: the sweep holds `<out>`'s lock (``RunFolder.lock``) from before
the model loads, so a second sweep on the same `--out` stops in one line naming the first, and
every cell's lock while it predicts and evaluates, so a `dyto predict` or `dyto judge` on a cell
in use stops too. (A second sweep is refused rather than given the cells nobody holds: every
cell advances video by video together, so a running sweep holds all of its cells, and two
sweeps would write one `sweep.md`.)

Each cell also gets the pictures of a run (`logs/keyframes.png`, `logs/merge_map.png`) from the
first video it predicts. Writes `<out>/sweep.md`, `<out>/sweep.json` and `<out>/sweep.png` (see
``sweep_report``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader

from dyto import viz
from dyto.datamodules.base import collate
from dyto.errors import ConfigError, OneLineParser, check
from dyto.evaluation.report import evaluate_run
from dyto.evaluation.sweep_report import write_sweep_report
from dyto.evaluation.sweep_flops import match_flops, nominal_text_tokens
from dyto.models.inner import InnerStage, build_inner_stage, list_inner_stages
from dyto.predict.writer import latest_per_id, load_attempts, merge_rank_logs
from dyto.records import append_jsonl, open_append_log, write_text_atomic
from dyto.reduction import TokenReducer, build_reducer, list_reducers
from dyto.runs import RunFolder, SettingsChanged, fingerprint_digest, run_fingerprint

__all__ = ["Cell", "parse_reducer", "parse_method", "check_grid", "build_grid", "run_sweep", "sweep_main",
           "SweepSettingsChanged"]

KNOBS = ("retention", "target_tokens")
MATCHES = ("tokens", "flops")
SWEEP_HINT = "sweep into another --out"


@dataclass
class Cell:
    """One reducer at one budget (``knob`` None: the method's own default, or unreduced concat)."""

    label: str                     # the reducer as given, e.g. "slowfast:fast_grid=1" or "dycoke+dycoke_kv"
    reducer: TokenReducer
    knob: str | None
    value: float | int | None
    stage: InnerStage | None = None  # the inner-LLM stage of a whole method
    match: str = "tokens"            # "flops": the outer budget was raised to the budget's prefill FLOPs
    visual_target: int | None = None  # with "flops": the outer reducer's target_tokens

    @property
    def name(self) -> str:
        """The cell's folder name: `<reducer>[_<param><value>...][+<stage>...]-<knob><value>[-flops]`
        (or `-default`)."""
        base = self.label.replace(":", "_").replace(",", "_").replace("=", "")
        budget = "unreduced" if self.reducer.name == "concat" and self.knob is None and self.stage is None else \
            f"{self.knob}{self.value:g}" if self.knob else "default"
        return f"{base}-{budget}" + ("-flops" if self.match == "flops" and self.knob else "")


def parse_reducer(spec: str) -> tuple[str, dict[str, Any]]:
    """`name` or `name:key=value,key=value` (values read as YAML) -> (name, params)."""
    name, _, rest = spec.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError("--reducers", spec, "name or name:key=value,key=value")
        params[key.strip()] = yaml.safe_load(value)
    return name, params


def parse_method(spec: str) -> tuple[str, dict[str, Any], str | None, dict[str, Any]]:
    """`reducer[:params][+stage[:params]]` -> (reducer, its params, stage or None, its params)."""
    reducer, _, stage = spec.partition("+")
    name, params = parse_reducer(reducer)
    stage_name, stage_params = parse_reducer(stage) if stage else (None, {})
    return name, params, stage_name, stage_params


def check_grid(reducers: list[str], retention: list[float], target_tokens: list[int]) -> None:
    """The grid's flags, checked before any model loads (``build_grid`` then checks every cell)."""
    for value in retention:
        check("--retention", value, "(0,1]")
    for value in target_tokens:
        check("--target-tokens", value, ">=1")
    for spec in reducers:
        name, _, stage, _ = parse_method(spec)
        check("--reducers", name, tuple(list_reducers()))
        if stage is not None:
            check("--reducers", stage, tuple(list_inner_stages()))


def build_grid(reducers: list[str], retention: list[float], target_tokens: list[int], num_frames: int) -> list[Cell]:
    """Every reducer (or whole method) at every budget, all on ``num_frames`` frames; `concat` also
    unreduced. A bad reducer, stage, parameter or budget raises ``ConfigError`` naming its flag."""
    check("--num-frames", num_frames, ">=1")
    budgets = [("retention", r) for r in retention] + [("target_tokens", t) for t in target_tokens] or [(None, None)]
    cells = []
    for spec in reducers:
        name, params, stage_name, stage_params = parse_method(spec)
        unreduced = [(None, None)] if name == "concat" and not stage_name and budgets[0][0] else []
        for knob, value in budgets + unreduced:
            extra = {knob: value} if knob else {}
            try:
                reducer = build_reducer(name, **params, num_frames=num_frames, **extra)
                stage = build_inner_stage(stage_name, **stage_params) if stage_name else None
            except ConfigError as e:
                flag = {"reducer": "--reducers", "retention": "--retention", "target_tokens": "--target-tokens",
                        "num_frames": "--num-frames"}.get(e.key, f"--reducers {spec}: {e.key}")
                raise e.at(flag) from None
            cells.append(Cell(spec, reducer, knob, value, stage))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ConfigError("--reducers", reducers, "each reducer once",
                          f"the grid names a cell twice: {sorted({n for n in names if names.count(n) > 1})}")
    return cells


class SweepSettingsChanged(SettingsChanged):
    """A sweep cell folder holds predictions made with other settings."""

    def __init__(self, cell: str, err: SettingsChanged):
        self.run_dir, self.changes = err.run_dir, err.changes
        listed = "; ".join(f"{k}: {json.dumps(o, default=str)} -> {json.dumps(n, default=str)}"
                           for k, o, n in err.changes[:12]) or "no recorded settings"
        RuntimeError.__init__(self, f"sweep cell {cell}: {err.run_dir} was predicted with other settings "
                              f"({listed}). Resuming would mix them: sweep into another --out, or move "
                              f"{err.run_dir} aside to start that cell over.")


@dataclass
class _CellState:
    cell: Cell
    folder: RunFolder
    digest: str
    pending: set[str]
    log: Any = None
    drawn: bool = False  # the cell's keyframes / merge-map pictures (of the first video it predicts)


def lock_cells(out: Path, cells: list[Cell]) -> ExitStack:
    """Hold ``out`` and every cell's run folder (nested where this process holds them already);
    raises ``RunLocked`` (and holds nothing) when another process holds one."""
    stack = ExitStack()
    try:
        for folder in [Path(out)] + [Path(out) / c.name for c in cells]:
            stack.enter_context(RunFolder(folder).lock("dyto sweep", SWEEP_HINT))
    except BaseException:
        stack.close()
        raise
    return stack


def _claim(cells: list[Cell], module, datamodule, out: Path, config: dict | None) -> list[_CellState]:
    """Each cell's run folder claimed with its fingerprint (all before anything is predicted)."""
    data_fp, ids = datamodule.fingerprint(), datamodule.input_ids()
    states = []
    for cell in cells:
        module.reducer, module.inner_stage = cell.reducer, cell.stage
        if cell.stage is not None:
            cell.stage.check(module.text_shape.layers)
        fingerprint = run_fingerprint(module.fingerprint(), data_fp)
        folder = RunFolder(out / cell.name)
        try:
            folder.claim(fingerprint, resume=True, write=False)
        except SettingsChanged as e:
            raise SweepSettingsChanged(cell.name, e) from None
        states.append(_CellState(cell, folder, fingerprint_digest(fingerprint), set(), None))
    for state in states:  # nothing is written until every cell agrees
        module.reducer, module.inner_stage = state.cell.reducer, state.cell.stage
        folder = state.folder.make()
        folder.claim(run_fingerprint(module.fingerprint(), data_fp), resume=True)
        write_text_atomic(folder.inputs, json.dumps(ids))
        if config is not None:
            write_text_atomic(folder.config, yaml.safe_dump(_cell_config(config, state.cell), sort_keys=False))
        done = {i for i, r in latest_per_id(load_attempts(folder)).items() if r["status"] == "ok"}
        state.pending = set(ids) - done
    return states


def _cell_config(config: dict, cell: Cell) -> dict:
    cfg = json.loads(json.dumps(config, default=str))
    cls = type(cell.reducer)
    params = {k: v for k, v in cell.reducer.config().items() if k != "name"}
    cfg.setdefault("model", {})["reducer"] = {"class_path": f"{cls.__module__}.{cls.__name__}", "init_args": params}
    cfg["model"].pop("inner_stage", None)
    if cell.stage is not None:
        stage = type(cell.stage)
        cfg["model"]["inner_stage"] = {"class_path": f"{stage.__module__}.{stage.__name__}",
                                       "init_args": cell.stage.params()}
    cfg.setdefault("data", {}).setdefault("init_args", {})["num_frames"] = cell.reducer.num_frames
    return cfg


def _groups(records) -> dict[tuple, list]:
    """(video, start, end) -> its records, in input order."""
    groups: dict[tuple, list] = {}
    for rec in records:
        groups.setdefault((rec.video, rec.start, rec.end), []).append(rec)
    return groups


class FeatureCache:
    """The encoded frames of ONE group: keyed by the video, its window, the frame indices and the
    settings that produced the features (preprocessing config, backbone fingerprint, CLS or not)."""

    def __init__(self, module, with_cls: bool):
        self.module, self.with_cls = module, with_cls
        self.settings = json.dumps({"preprocessing": module.preprocessing.config(),
                                    "backbone": module.backbone.fingerprint(), "with_cls": with_cls},
                                   sort_keys=True, default=str)
        self.key, self.value, self.encodes = None, None, 0

    def get(self, group: tuple, indices: list[int], pixels) -> tuple[Any, Any, float]:
        """(features [T',N,D], cls [T',D] | None, encode ms, extras); encodes only on a new key."""
        key = (group, tuple(indices), self.settings)
        if key != self.key:
            self.key, self.value = None, None  # the previous group's features go before the next encode
            t0 = time.perf_counter()
            features, cls, extras = self.module.encode_frames(pixels, with_cls=self.with_cls, with_extras=True)
            if features.device.type == "cuda":
                torch.cuda.synchronize(features.device)
            ms = (time.perf_counter() - t0) * 1e3
            self.key, self.value, self.encodes = key, (features, cls, ms, extras), self.encodes + 1
        return self.value


def run_sweep(module, datamodule, cells: list[Cell], out: str | Path, config: dict | None = None,
              device: torch.device | str = "cpu", pictures: bool = True) -> dict[str, Any]:
    """Predict every cell's pending questions (each video decoded and encoded once) and merge each
    cell's predictions. ``datamodule`` must be set up for ``module`` (its preprocessing and frame
    count resolved, as ``sweep_main`` does); every cell's reducer samples its ``num_frames``.
    ``pictures``: draw each cell's keyframes / merge map from the first video it predicts.
    Returns {"decoded": videos decoded, "encoded": encoder calls, "cells": per-cell states}."""
    out = Path(out)
    wrong = [c.name for c in cells if c.reducer.num_frames != datamodule.num_frames]
    if wrong:
        raise ValueError(f"cells {wrong} sample other than the data's {datamodule.num_frames} frames")
    original, states = (module.reducer, module.inner_stage), []
    locks = lock_cells(out, cells)  # before any cell folder is written
    module.eval().to(device)
    try:
        states = _claim(cells, module, datamodule, out, config)
        records = {r.id: r for r in datamodule.records}
        groups = _groups(datamodule.records)
        needed = [g for g, recs in groups.items() if any(r.id in s.pending for s in states for r in recs)]
        heads = {groups[g][0].id: g for g in needed}
        datamodule.skip_ids = set(records) - set(heads)  # the dataset then decodes one record per group
        workers, prefetch = datamodule.loader_workers()  # "auto" resolved as `dyto predict` resolves it
        loader = DataLoader(datamodule.predict_dataset(), batch_size=1, shuffle=False, collate_fn=collate,
                            num_workers=workers, prefetch_factor=prefetch if workers else None)
        cache = FeatureCache(module, with_cls=any(c.reducer.needs_cls for c in cells))
        decoded = 0
        for sample in loader:
            decoded += 1
            group = heads[sample["ids"][0]]
            features = None
            if sample["status"][0] == "ok":
                try:
                    features = cache.get(group, sample["frame_indices"][0], sample["pixel_values"][0])
                except Exception as e:  # as in a run: the video's questions get an error record, the sweep goes on
                    sample = dict(sample, status=["error"], error=[f"encode failed: {type(e).__name__}: {e}"])
            for state in states:
                todo = [r for r in groups[group] if r.id in state.pending]
                if pictures and features is not None and todo and not state.drawn:
                    state.drawn = _draw(module, state, sample, features, todo[0].video)
                for start in range(0, len(todo), max(1, datamodule.batch_size)):
                    _predict_chunk(module, state, todo[start:start + max(1, datamodule.batch_size)], sample, features)
        for state in states:
            state.log = state.log.close() if state.log is not None else None
            merge_rank_logs(state.folder)
        return {"decoded": decoded, "encoded": cache.encodes, "cells": states}
    finally:
        module.reducer, module.inner_stage = original
        for state in states:  # a failure above: what was appended stays, flushed, for the rerun
            if state.log is not None:
                state.log.close()
        locks.close()


def _draw(module, state: _CellState, sample: dict, features, video: str) -> bool:
    """The cell's `logs/keyframes.png` and `merge_map.png`, as a run draws them; never fatal."""
    feats, cls = features[0], features[1]            # (features, cls, encode ms, extras)
    reducer = state.cell.reducer
    try:
        with torch.no_grad():
            viz.save_run_pictures(state.folder.logs, module, sample["pixel_values"][0], feats, cls, reducer,
                                  state.cell.name, video)
    except Exception as e:  # a picture is never worth the sweep
        warnings.warn(f"dyto sweep: could not draw {state.cell.name}'s pictures: {type(e).__name__}: {e}")
    return True


def _predict_chunk(module, state: _CellState, recs, sample: dict, features) -> None:
    """One cell's questions about one decoded video, through ``VideoQA.predict_step``."""
    n = len(recs)
    batch = {"ids": [r.id for r in recs], "records": [r.to_dict() for r in recs],
             **{k: sample[k] * n for k in ("pixel_values", "frame_indices", "frames_total", "status", "error",
                                           "decode_ms", "fps") if k in sample}}
    module.reducer, module.inner_stage = state.cell.reducer, state.cell.stage
    if features is not None:
        module.use_features({r.id: (features[0], features[1], features[3]) for r in recs})
    preds = module.predict_step(batch, 0)
    for p in preds:
        p["fingerprint"] = state.digest
        if features is not None and "encode" in (p.get("timings") or {}):
            p["timings"]["encode"] = features[2]  # the group's one encode (the step only took it over)
    if state.log is None:
        state.log = open_append_log(state.folder.rank_log(0))
    append_jsonl(state.log, preds)


def sweep_main(argv: list[str], build: Callable[[list[str]], tuple]) -> int:
    """`dyto sweep ...`; ``build(rest)`` parses the `dyto predict` options and returns
    (module, datamodule, trainer, config dict) (``dyto.cli.build_for_sweep``)."""
    p = OneLineParser(prog="dyto sweep", description=__doc__.split("\n\n")[0],
                                epilog="Every other option (--config, --model.*, --data.*, --trainer.*, "
                                       "--evaluation.*) is dyto predict's.")
    p.add_argument("--reducers", nargs="+", required=True, help="registry names, optionally name:key=value,...")
    p.add_argument("--retention", nargs="*", type=float, default=[], help="shares of the T*N input tokens")
    p.add_argument("--target-tokens", nargs="*", type=int, default=[], help="visual-token counts")
    p.add_argument("--match", choices=MATCHES, default="tokens",
                   help="tokens: a budget is the outer reducer's visual tokens; flops: a whole method's outer budget "
                        "is raised until its prefill FLOPs equal those of the budget's tokens without a stage")
    p.add_argument("--num-frames", type=int, default=None,
                   help="frames per video for every cell (default: data.num_frames, else the config's reducer's)")
    p.add_argument("--out", required=True, help="the sweep folder (one run folder per cell inside)")
    p.add_argument("--scorer", choices=("auto", "gpt", "match"), default=None,
                   help="default: the config's evaluation.scorer (judge settings: --evaluation.judge.*)")
    p.add_argument("--baseline", default=None, help="the cell of the '%% of the unreduced run' column "
                   "(default: concat-unreduced when concat is in the grid)")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples for the intervals")
    p.add_argument("--pictures", action=argparse.BooleanOptionalAction, default=True,
                   help="each cell's logs/keyframes.png and merge_map.png, as a run draws them (about 0.4 s of "
                        "CPU a cell)")
    args, rest = p.parse_known_args(argv)
    check("--resamples", args.resamples, ">=1")
    check("--num-frames", args.num_frames, ">=1", optional=True)
    check_grid(args.reducers, args.retention, args.target_tokens)
    if args.scorer is not None:  # as dyto predict's option, so the preflight checks the judge it needs
        rest = [*rest, "--evaluation.scorer", args.scorer]
    with ExitStack() as held:  # <out>'s lock: taken after the preflight, before the model loads
        def lock() -> None:
            held.enter_context(RunFolder(args.out).lock("dyto sweep", SWEEP_HINT))

        return _sweep(args, rest, lambda r: build(r, after_preflight=lock))


def _sweep(args: argparse.Namespace, rest: list[str], build: Callable[[list[str]], tuple]) -> int:
    module, datamodule, trainer, config, evaluation = build(rest)
    if args.num_frames is not None:
        datamodule.num_frames = args.num_frames
    elif datamodule.num_frames is None:
        datamodule.num_frames = module.num_frames
    datamodule.trainer = _ModuleOnly(module)  # setup() reads the model's preprocessing from trainer.lightning_module
    try:
        datamodule.setup("predict")
    finally:
        datamodule.trainer = None
    num_frames = datamodule.num_frames
    cells = build_grid(args.reducers, args.retention, args.target_tokens, num_frames)
    if args.match == "flops":
        text = nominal_text_tokens(module, datamodule.records)
        temporal = num_frames // module.preprocessing.frames_per_patch
        cells = match_flops(cells, module.text_shape, text, temporal, module.grid[0] * module.grid[1])
        print(f"[dyto] sweep --match flops: {text} text tokens (median prompt); outer targets "
              + ", ".join(f"{c.name}: {c.visual_target}" for c in cells if c.visual_target is not None))
    module.num_frames = num_frames
    names = [c.name for c in cells]
    baseline = args.baseline or ("concat-unreduced" if "concat-unreduced" in names else None)
    if baseline is not None and baseline not in names:
        raise ConfigError("--baseline", baseline, "a cell of this grid: " + ", ".join(names))
    print(f"[dyto] sweep {args.out}: {len(cells)} cells x {len(datamodule.input_ids())} questions, "
          f"{num_frames} frames per video")
    with lock_cells(args.out, cells):  # held through evaluation
        with trainer.precision_plugin.forward_context():
            done = run_sweep(module, datamodule, cells, args.out, config, trainer.strategy.root_device, args.pictures)
        print(f"[dyto] decoded {done['decoded']} videos, encoded {done['encoded']}")
        for state in done["cells"]:
            evaluate_run(state.folder.root, evaluation.scorer, evaluation.judge_config, evaluation.choice_mode)
    text = write_sweep_report(args.out, cells, num_frames, baseline, args.resamples,
                              {"decoded": done["decoded"], "encoded": done["encoded"]}, match=args.match)
    print(text)
    print(f"[dyto] sweep table: {Path(args.out) / 'sweep.md'}")
    return 0


class _ModuleOnly:
    """What ``VideoQADataModule.setup`` reads of a trainer: the attached LightningModule."""

    def __init__(self, module):
        self.lightning_module = module
