"""A wrong setting or a malformed records file ends in one line naming it (issue 25).

Every case of the table runs as its own process (``tests/cli_processes.py`` forks one per command
line after importing torch, Lightning and transformers once; one case also runs as a plain
``python cli.py`` process) and must: exit with status 2, print no traceback, write no prediction
record, and say ``dyto: <key or file:line>: <problem>`` in one line. A bug (an exception that is
not the user's) must keep its traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dyto.errors import ConfigError, UserError, config_error, parser_error
from dyto.reduction import DyToReducer, TokenReducer

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "dyto" / "assets" / "demo"


class BuggyReducer(TokenReducer):
    """A reducer with a bug in its constructor: the CLI must show the traceback, not one line."""

    def __init__(self, num_frames: int = 8):
        self.num_frames = {}["a bug, not a setting"]


def _records(tmp: Path) -> dict[str, Path]:
    """Malformed copies of the demo's records file (5 lines), one problem each."""
    lines = (DEMO / "questions.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    mc = recs[1]  # multiple choice, answer_index 1
    nextqa = [dict(mc, benchmark="nextqa"), dict(mc, benchmark="nextqa")]
    files = {
        "torn": lines[:3] + [lines[3][:40]] + lines[4:],                                      # line 4
        "duplicate": [lines[0], lines[0]],                                                   # line 2
        "missing": [lines[0], lines[2], json.dumps({k: v for k, v in mc.items() if k not in ("question", "answer")})],
        "mismatch": [lines[0], json.dumps(dict(mc, answer_index=0))],                       # line 2
        "nextqa": [json.dumps(r) for r in nextqa],                                           # line 2: duplicate
    }
    out = {}
    for name, rows in files.items():
        out[name] = tmp / f"{name}.jsonl"
        out[name].write_text("\n".join(rows) + "\n")
    return out


def _cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """case -> (argv, what the one line must contain: the key, or file:line)."""
    rec = _records(tmp)
    video_root = tmp / "videos"
    video_root.mkdir()

    def predict(case: str, *extra: str) -> list[str]:
        return ["predict", "--config", "configs/demo.yaml", "--output.output_dir", str(tmp / case), *extra]

    def sweep(case: str, *extra: str) -> list[str]:
        return ["sweep", "--config", "configs/demo.yaml", "--num-frames", "8", "--out", str(tmp / case), *extra]

    table = {
        # the eleven: silently wrong, a traceback around a good message, jsonargparse's dump
        "num_frames_0": (["--data.init_args.num_frames", "0"], "data.init_args.num_frames: 0 is not allowed"),
        "num_frames_negative": (["--data.init_args.num_frames", "-4"], "data.init_args.num_frames: -4"),
        "max_new_tokens_0": (["--model.max_new_tokens", "0"], "model.max_new_tokens: 0 is not allowed"),
        "torn_line": (["--data.init_args.records", str(rec["torn"])], f"{rec['torn']}:4: not valid JSON"),
        "duplicate_id": (["--data.init_args.records", str(rec["duplicate"])],
                         f"{rec['duplicate']}:2: duplicate id 'demo-bikes-1' (first at line 1)"),
        "missing_fields": (["--data.init_args.records", str(rec["missing"])],
                           f"{rec['missing']}:3: record 'demo-bikes-2': missing required fields question, answer"),
        "budget_negative": (["--model.reducer.init_args.budget", "-5"], "model.reducer.init_args.budget: -5"),
        "retention_over_1": (["--model.reducer.init_args.retention", "1.5"], "model.reducer.init_args.retention: 1.5"),
        "retention_and_target": (["--model.reducer.init_args.retention", "0.5",
                                  "--model.reducer.init_args.target_tokens", "64"],
                                 "model.reducer.init_args.retention: 0.5 is not allowed; expected null while "
                                 "target_tokens (64) is set"),
        "batch_size_0": (["--data.init_args.batch_size", "0"], "data.init_args.batch_size: 0 is not allowed"),
        "answer_not_the_indexed_option": (["--data.init_args.records", str(rec["mismatch"])],
                                          f"{rec['mismatch']}:2: record 'demo-bikes-2': answer 'on a city street' "
                                          "is not option 0"),
        # more of the same kinds
        "num_workers_negative": (["--data.init_args.num_workers", "-1"], "data.init_args.num_workers: -1"),
        "decode_timeout_0": (["--data.init_args.decode_timeout_s", "0"], "data.init_args.decode_timeout_s: 0.0"),
        "evaluation_judge_concurrency_0": (["--evaluation.judge.concurrency", "0"], "evaluation.judge.concurrency: 0"),
        "judge_max_cost_negative": (["--evaluation.judge.max_cost", "-1"], "evaluation.judge.max_cost: -1.0"),
        "scorer_typo": (["--evaluation.scorer", "gtp"], "evaluation.scorer: 'gtp' is not allowed"),
        "not_an_int": (["--model.max_new_tokens", "abc"], "model.max_new_tokens: Expected a <class 'int'>"),
        "unknown_reducer_key": (["--model.reducer.init_args.budgt", "5"], "model.reducer: "),
        "reducer_frames_0": (["--model.reducer.init_args.num_frames", "0", "--data.init_args.num_frames", "0"],
                             "model.reducer.init_args.num_frames: 0"),
    }
    cases = {name: (predict(name, *argv), want) for name, (argv, want) in table.items()}
    more: dict[str, tuple[list[str], str]] = {}
    more["records_of_a_registered_benchmark"] = (
        ["predict", "--config", "configs/trainer/cpu.yaml", "--config", "configs/models/tiny.yaml", "--config",
         "configs/benchmarks/nextqa.yaml", "--data.records", str(rec["nextqa"]), "--data.video_root", str(video_root),
         "--output.output_dir", str(tmp / "records_of_a_registered_benchmark")],
        f"{rec['nextqa']}:2: duplicate id 'demo-bikes-2' (first at line 1) (data.records); remake it with "
        f"`dyto prepare nextqa --qa-file <its QA sheet> --out {rec['nextqa']}`")
    more["sweep_unknown_reducer"] = (sweep("sweep_unknown_reducer", "--reducers", "dyto", "dytoo"),
                                     "--reducers: 'dytoo' is not allowed; expected one of")
    more["sweep_empty_grid"] = (sweep("sweep_empty_grid", "--reducers", "--retention", "0.5"),
                                "--reducers: expected at least one argument")
    more["sweep_retention_over_1"] = (sweep("sweep_retention_over_1", "--reducers", "uniform", "--retention", "1.5"),
                                      "--retention: 1.5 is not allowed; expected a number in (0, 1]")
    more["judge_missing_folder"] = (["judge", "--predictions", str(tmp / "judge_missing_folder")],
                                    f"--predictions: {tmp / 'judge_missing_folder'} does not exist")
    more["judge_concurrency_0"] = (["judge", "--predictions", str(tmp / "judge_concurrency_0"), "--concurrency", "0"],
                                   "--concurrency: 0 is not allowed; expected an integer >= 1")
    more["demo_reducer_arg"] = (["demo", "--video", str(DEMO / "bikes.mp4"), "--question", "what?",
                                 "--reducer-arg", "budget=0"], "--reducer-arg budget: 0 is not allowed")
    assert not set(more) & set(cases)  # one name per case
    cases.update(more)
    return cases


DIRECT = {  # also run as the plain entry point, without the fork server (each costs ~6 s of imports)
    "max_new_tokens_0": [sys.executable, "cli.py"],
}


def _names() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return list(_cases(Path(tmp)))


CASE_NAMES = _names()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """case -> {"returncode", "stdout", "stderr"}: every case's process, run at once."""
    tmp = tmp_path_factory.mktemp("user_errors")
    cases = _cases(tmp)
    buggy = ["predict", "--config", "configs/demo.yaml", "--output.output_dir", str(tmp / "bug"),
             "--model.reducer", "test_user_errors.BuggyReducer"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    # a folder of its own: the forked run of the same case runs at the same time, and the two would
    # otherwise meet at the run lock of one run folder
    direct = {name: subprocess.Popen(cmd + cases[name][0] + ["--output.output_dir", str(tmp / f"{name}[direct]")],
                                     cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for name, cmd in DIRECT.items()}
    commands = [argv for argv, _ in cases.values()] + [buggy]
    forked = subprocess.run([sys.executable, str(REPO / "tests" / "cli_processes.py"), "--jobs", "2"],
                            input=json.dumps(commands), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert forked.returncode == 0, forked.stderr[-3000:]
    results = json.loads(forked.stdout)
    out = {name: dict(r, want=want, tmp=tmp) for (name, (_, want)), r in zip(cases.items(), results)}
    out["bug"] = results[-1]
    for name, proc in direct.items():
        stdout, stderr = proc.communicate(timeout=600)
        out[f"{name}[direct]"] = dict(returncode=proc.returncode, stdout=stdout, stderr=stderr,
                                      want=cases[name][1], tmp=tmp)
    return out


@pytest.mark.parametrize("case", CASE_NAMES + [f"{name}[direct]" for name in DIRECT])
def test_a_user_error_stops_in_one_line_naming_it(outcomes, case):
    r = outcomes[case]
    text = r["stdout"] + r["stderr"]
    assert r["returncode"] == 2, text[-2000:]
    assert "Traceback" not in text, text[-2000:]
    said = [line for line in r["stderr"].splitlines() if line.startswith("dyto: ")]
    assert len(said) == 1 and said[0] == r["stderr"].strip().splitlines()[-1], r["stderr"][-2000:]
    assert r["want"] in said[0], said[0]
    assert not list((r["tmp"] / case).rglob("predictions*.jsonl"))  # nothing predicted


def test_a_bug_keeps_its_traceback(outcomes):
    r = outcomes["bug"]
    assert r["returncode"] == 1 and "Traceback" in r["stderr"] and "KeyError: 'a bug, not a setting'" in r["stderr"]


# -- the translation itself, in-process ----------------------------------------------------------

def _raised(fn) -> BaseException:
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 - the error under test
        return e
    raise AssertionError("nothing was raised")


def test_a_constructor_key_becomes_the_dotted_key_of_the_object_that_raised():
    # num_frames 0 in two places: the reducer raised, so its key is named, not the data's
    config = {"model": {"reducer": {"class_path": "dyto.reduction.DyToReducer", "init_args": {"num_frames": 0}}},
              "data": {"class_path": "dyto.datamodules.VideoQADataModule", "init_args": {"num_frames": 0}}}
    err = config_error(_raised(lambda: DyToReducer(num_frames=0)), config)
    assert isinstance(err, ConfigError) and err.key == "model.reducer.init_args.num_frames"
    # jsonargparse's wrapper around it: the cause chain is followed to the constructor's own error
    wrapped = _raised(lambda: _wrap(lambda: DyToReducer(num_frames=0)))
    assert config_error(wrapped, config).key == "model.reducer.init_args.num_frames"


def _wrap(fn):
    try:
        fn()
    except ValueError as e:
        raise ValueError("Does not validate against any of the Union subtypes\nGiven value type: ...") from e


def test_a_plain_value_error_of_a_constructor_names_its_object_and_a_deeper_one_is_a_bug():
    class Picky:
        def __init__(self, mode: str = "x"):
            raise ValueError(f"unknown mode {mode!r}")

    class Careless:
        def __init__(self):
            json.loads("{")  # raised inside a library: a bug, whatever its type

    config = {"model": {"thing": {"class_path": "somewhere.Picky", "init_args": {"mode": "x"}}}}
    assert str(config_error(_raised(Picky), config)) == "model.thing: unknown mode 'x'"
    assert config_error(_raised(Careless), config) is None
    assert config_error(_raised(lambda: {}["k"]), config) is None


def test_a_parse_error_is_one_line_with_its_key_and_reasons():
    union = ('Parser key "model.reducer":\n  Does not validate against any of the Union subtypes\n  Subtypes: [...]\n'
             "  Errors:\n    - Problem with given class_path 'dyto.reduction.DyToReducer':\n"
             "        Option 'budgt' is not accepted\n    - Expected a <class 'NoneType'>\n"
             "  Given value type: <class 'jsonargparse._util.NestedArg'>\n  Given value: NestedArg(key='budgt')")
    assert str(parser_error(union, "dyto predict")) == ("model.reducer: Problem with given class_path "
                                                         "'dyto.reduction.DyToReducer': Option 'budgt' is not accepted")
    assert isinstance(parser_error("unrecognized arguments: --x", "dyto predict"), UserError)
