"""Run many `dyto` command lines, each in its own process, paying the heavy imports once.

    echo '[["predict", "--config", "configs/demo.yaml"], ["judge", "--predictions", "x"]]' \
        | python tests/cli_processes.py --jobs 2
    -> [{"argv": [...], "returncode": 2, "stdout": "...", "stderr": "..."}, ...]

A `python cli.py ...` process spends 5-10 s importing torch, Lightning and transformers before
it reads its first argument, too long for a table of twenty command lines in the test budget.
This process imports what `dyto predict` imports once, then forks one child per command line
(at most ``--jobs`` at a time). Each child is an ordinary OS process: it runs the repository's
``cli.py`` as ``__main__`` with that argv, its stdout and stderr go to their own files, and it ends
the way the interpreter ends a script: the status of a ``SystemExit`` (a string code printed to
stderr, status 1), or, for any other exception, the traceback ``sys.excepthook`` prints and
status 1. The parent reports each child's exit status and output as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _child(argv: list[str], out: int, err: int) -> None:
    """Never returns: run ``cli.py argv`` here and exit with the status a script would have."""
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.argv = [str(REPO / "cli.py"), *argv]
    try:
        runpy.run_path(str(REPO / "cli.py"), run_name="__main__")
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_all(commands: list[list[str]], jobs: int) -> list[dict]:
    results: list[dict] = [{} for _ in commands]
    running: dict[int, tuple[int, object, object]] = {}
    todo = list(enumerate(commands))
    with tempfile.TemporaryDirectory() as tmp:
        while todo or running:
            while todo and len(running) < jobs:
                i, argv = todo.pop(0)
                out = open(Path(tmp) / f"{i}.out", "w+b")
                err = open(Path(tmp) / f"{i}.err", "w+b")
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(argv, out.fileno(), err.fileno())
                running[pid] = (i, out, err)
            pid, status = os.wait()
            i, out, err = running.pop(pid)
            out.seek(0)
            err.seek(0)
            results[i] = {"argv": commands[i], "returncode": os.waitstatus_to_exitcode(status),
                          "stdout": out.read().decode(errors="replace"), "stderr": err.read().decode(errors="replace")}
            out.close()
            err.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="children running at once")
    args = ap.parse_args()
    commands = json.load(sys.stdin)
    os.chdir(REPO)
    # what `dyto predict` / `dyto sweep` import before they parse a setting (dyto.cli imports lazily)
    import lightning.pytorch  # noqa: F401
    import transformers  # noqa: F401

    import dyto.cli  # noqa: F401
    from dyto.callbacks import EvaluateCallback, PicturesCallback  # noqa: F401
    from dyto.datamodules import VideoQADataModule  # noqa: F401
    from dyto.evaluation import judge_cli, sweep  # noqa: F401
    from dyto.models.videoqa import VideoQA  # noqa: F401
    from dyto.predict import PredictionWriter  # noqa: F401

    results = run_all(commands, args.jobs)
    sys.stdout.write(json.dumps(results))


if __name__ == "__main__":
    main()
