"""One run folder, one writer (dyto/runlock.py): real processes contend for real run folders.

Two `dyto predict` started together, a holder killed with SIGKILL and a rerun, two `dyto judge`
against the loopback judge server, a second `dyto sweep`, and lock files left by dead or silent
holders, with both mechanisms (flock, and the lock file + heartbeat of file systems whose flock
is not shared).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from dyto.errors import ConfigError, UserError
from dyto.records import read_jsonl, write_jsonl
from dyto.runlock import STALE_S, flock_shared, lock_mode, parse_mountinfo
from dyto.runs import RunFolder, RunLocked
from judge_server import JudgeServer
from test_judge import make_preds
from test_run_cli import REPO, assert_complete, attempts, cli_args, make_records, run_env

HOST = socket.gethostname()
HOLD = ("import sys, time\nfrom dyto.runs import RunFolder\n"
        "with RunFolder(sys.argv[1]).lock(sys.argv[2]):\n    print('held', flush=True)\n    time.sleep(600)\n")


def hold_in_child(folder: Path, purpose: str, **env: str) -> subprocess.Popen:
    """A real process that holds ``folder``'s lock until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), purpose], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env})
    assert proc.stdout.readline().strip() == "held"
    return proc


def kill_9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def refused_while_held(argv: list[str], held: Path, purpose: str, capsys) -> tuple[str, int]:
    """``dyto argv`` while a real process holds ``held``'s lock as ``purpose``: it must stop with
    exit status 2. Returns its last stderr line (without ``dyto: ``) and the holder's pid."""
    from dyto.cli import main

    child = hold_in_child(held, purpose)
    try:
        with pytest.raises(SystemExit) as stop:
            main(argv)
    finally:
        kill_9(child)
    assert stop.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1].removeprefix("dyto: "), child.pid


def assert_names_holder(message: str, folder: Path, purpose: str, pid: int, way_out: str) -> None:
    assert "\n" not in message.strip()
    assert message.startswith(f"{folder} is in use by {purpose} on host {HOST} (pid {pid}, started 20")
    assert message.rstrip().endswith(f"wait for it to finish, or {way_out}")


@pytest.mark.slow
def test_two_predicts_started_together_then_the_holder_killed_and_a_rerun(tmp_path, monkeypatch, capsys):
    ids = make_records(tmp_path / "q.jsonl", 10)  # enough that the holder cannot finish between two polls
    args = cli_args(tmp_path / "q.jsonl", tmp_path / "out", "twice", "--data.init_args.batch_size", "1",
                    "--data.init_args.num_workers", "0", "--trainer.enable_progress_bar", "false",
                    "--model.reducer.init_args.num_frames", "16", "--model.max_new_tokens", "4")  # quicker questions
    run_dir = tmp_path / "out" / "twice"
    logs = [(open(tmp_path / f"out{i}.txt", "w"), open(tmp_path / f"err{i}.txt", "w")) for i in range(2)]
    procs = [subprocess.Popen(args, cwd=REPO, env=run_env(), stdout=out, stderr=err, start_new_session=True)
             for out, err in logs]
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.05)
        (loser,) = [i for i, p in enumerate(procs) if p.poll() is not None]
        winner = procs[1 - loser]
        err = (tmp_path / f"err{loser}.txt").read_text()
        assert procs[loser].returncode == 2, err[-3000:]
        assert "Traceback" not in err
        line = err.strip().splitlines()[-1]  # the one line, naming the holder and the way out
        assert line.startswith("dyto: ")
        assert_names_holder(line[6:], run_dir, "dyto predict", winner.pid, "pick another --output.run_name")
        assert "run dir" not in (tmp_path / f"out{loser}.txt").read_text()  # stopped before the model loaded

        rank_log = run_dir / "artifacts" / "predictions.rank0.jsonl"
        while time.monotonic() < deadline and winner.poll() is None:
            if rank_log.exists() and rank_log.read_text().count("\n") >= 1:
                break
            time.sleep(0.05)
        assert winner.poll() is None, "the holder finished before it could be killed"
        os.killpg(winner.pid, signal.SIGKILL)
        winner.wait()
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for out, err in logs:
            out.close(), err.close()
    first = [r["id"] for r in read_jsonl(rank_log, allow_torn_tail=True)]
    assert 1 <= len(first) < len(ids)

    from dyto.cli import main

    monkeypatch.chdir(REPO)
    capsys.readouterr()
    main(args[2:])  # the rerun takes the dead holder's lock over and finishes
    out, err = capsys.readouterr()
    assert f"took over the lock of {run_dir} from dyto predict on host {HOST} (pid {winner.pid}" in err
    assert f"{len(first)} already done, {len(ids) - len(first)} to predict" in out
    assert {r["status"] for r in assert_complete(run_dir, ids)} == {"ok"}
    assert Counter(r["id"] for r in attempts(run_dir)) == Counter(ids)  # every question predicted once, no torn line
    assert json.loads((run_dir / "run.lock").read_text())["released"] is True


@pytest.mark.slow
def test_two_judges_on_one_folder_then_the_holder_killed_and_a_rerun(tmp_path, capsys):
    from dyto.cli import main
    from dyto.evaluation.judge_cli import judge_main
    from dyto.evaluation.protocol import load_cache

    run = tmp_path / "run"
    preds = make_preds(30)  # 34 judge jobs
    write_jsonl(run / "artifacts" / "predictions.jsonl", preds)
    cache = run / "eval_save_dir" / "judgments.jsonl"
    with JudgeServer("good", delay_s=0.2) as srv, JudgeServer("good") as other:
        argv = ["--predictions", str(run), "--base-url", srv.base_url, "--no-progress"]
        holder = subprocess.Popen([sys.executable, "-m", "dyto.evaluation.judge_cli", *argv, "--concurrency", "2"],
                                  env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{Path(__file__).parent}"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and (not cache.exists() or cache.read_text().count("\n") < 4):
                time.sleep(0.02)
            # a second judge on the same folder (its own server, to see that it asks nothing) stops
            with pytest.raises(SystemExit) as stopped:  # through the command's one handler
                main(["judge", "--predictions", str(run), "--base-url", other.base_url, "--no-progress"])
            assert stopped.value.code == 2
            assert other.requests == []
            line = capsys.readouterr().err.strip().splitlines()[-1]
            assert_names_holder(line.removeprefix("dyto: "), run, "dyto judge", holder.pid,
                                "judge into another folder with --out DIR")
        finally:
            kill_9(holder)
        finished = list(read_jsonl(cache, allow_torn_tail=True))
        assert 4 <= len(finished) < 34, "the judge finished before it could be killed"
        srv.delay_s = 0
        asked = len(srv.requests)
        assert judge_main(argv) == 0
        assert f"took over the lock of {run} from dyto judge on host {HOST} (pid {holder.pid}" in capsys.readouterr().err
        rerun = srv.user_messages()[asked:]
    # the items left, and at most the holder's two requests in flight at the kill (counted late) ...
    assert 34 - len(finished) <= len(rerun) <= 34 - len(finished) + 2
    questions = {p["id"]: p["question"] for p in preds}
    for rec in finished:  # ... but no item that was already cached
        if rec["id"].startswith("o"):
            assert not any(f"Question: {questions[rec['id']]}\n" in m for m in rerun), rec["id"]
    lines = list(read_jsonl(cache))  # no torn line left behind
    assert len(lines) == 34 and len(load_cache(cache)) == 34  # every item judged once


@pytest.mark.parametrize("mode", ["flock", "file"])
def test_a_live_holder_is_named_and_a_dead_ones_lock_is_taken_over(tmp_path, monkeypatch, capsys, mode):
    monkeypatch.setenv("DYTO_RUN_LOCK", mode)
    folder = RunFolder(tmp_path / "run")
    child = hold_in_child(folder.root, "dyto predict", DYTO_RUN_LOCK=mode)
    try:
        with pytest.raises(RunLocked) as refused, folder.lock("dyto judge"):
            pass
        assert isinstance(refused.value, UserError)
        assert_names_holder(str(refused.value), folder.root, "dyto predict", child.pid, "pick another --output.run_name")
    finally:
        kill_9(child)  # the lock file stays behind with the dead pid's record
    assert json.loads(folder.lock_file.read_text())["pid"] == child.pid
    with folder.lock("dyto judge") as record, folder.lock("evaluation"):  # nested in the same process
        assert record["pid"] == os.getpid() and record["mode"] == mode
    assert f"took over the lock of {folder.root} from dyto predict on host {HOST} (pid {child.pid}" in capsys.readouterr().err
    if mode == "flock":  # released: the file stays, marked released, and the next taker says nothing
        assert json.loads(folder.lock_file.read_text())["released"] is True
    else:
        assert not folder.lock_file.exists()
    with folder.lock("dyto predict"):
        pass
    assert "took over" not in capsys.readouterr().err


def test_lock_file_mechanism_honours_a_fresh_heartbeat_from_another_host_and_takes_a_stale_one(tmp_path, monkeypatch,
                                                                                              capsys):
    monkeypatch.setenv("DYTO_RUN_LOCK", "file")
    folder = RunFolder(tmp_path / "run")
    folder.root.mkdir()
    elsewhere = {"purpose": "dyto predict", "host": "gpu-node-7", "boot": "x", "pidns": "x", "pid": 4242,
                 "started": "2025-01-01 00:00:00 UTC", "token": "t", "released": False}
    folder.lock_file.write_text(json.dumps({**elsewhere, "heartbeat": time.time() - 5}))
    with pytest.raises(RunLocked, match="in use by dyto predict on host gpu-node-7 \\(pid 4242"), folder.lock("x"):
        pass
    folder.lock_file.write_text(json.dumps({**elsewhere, "heartbeat": time.time() - STALE_S - 30}))
    with folder.lock("dyto judge"):
        pass
    assert "from dyto predict on host gpu-node-7 (pid 4242, started 2025-01-01 00:00:00 UTC): its last heartbeat " \
           f"is {STALE_S + 30:.0f} s old (limit {STALE_S:.0f} s)" in capsys.readouterr().err


def test_which_file_systems_get_flock():
    mountinfo = "\n".join([
        r"27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
        r"40 27 0:50 / /mnt/nfs rw - nfs4 srv:/export rw,vers=4.2,local_lock=none",
        r"41 27 0:51 / /mnt/nfs\040local rw - nfs srv:/e rw,vers=3,local_lock=all,nolock",
        r"42 27 0:52 / /lustre rw master:1 - lustre 10.0.0.1@tcp:/fs rw,flock",
        r"43 27 0:53 / /lustre2 rw - lustre 10.0.0.1@tcp:/fs rw,localflock",
        r"44 27 0:54 / /home/u/remote rw - fuse.sshfs u@h:/ rw,user_id=1000",
    ])
    mounts = {point: (fstype, options) for point, fstype, options in parse_mountinfo(mountinfo)}
    assert set(mounts) == {"/", "/mnt/nfs", "/mnt/nfs local", "/lustre", "/lustre2", "/home/u/remote"}
    shared = {point: flock_shared(*mounts[point]) for point in mounts}
    assert shared == {"/": True, "/mnt/nfs": True, "/mnt/nfs local": False, "/lustre": True, "/lustre2": False,
                      "/home/u/remote": False}
    assert not flock_shared("beegfs", set()) and not flock_shared("cifs", set()) and flock_shared("ceph", set())


def test_the_mechanism_can_be_chosen(tmp_path, monkeypatch):
    monkeypatch.setenv("DYTO_RUN_LOCK", "file")
    assert lock_mode(tmp_path) == ("file", "DYTO_RUN_LOCK")
    monkeypatch.setenv("DYTO_RUN_LOCK", "sometimes")
    with pytest.raises(ConfigError, match="DYTO_RUN_LOCK: 'sometimes' is not allowed; expected auto, flock or file"):
        lock_mode(tmp_path)
    monkeypatch.delenv("DYTO_RUN_LOCK")
    assert lock_mode(tmp_path)[0] in ("flock", "file")  # from this machine's mount table


def test_a_second_sweep_on_one_out_stops_before_the_model_loads_and_a_held_cell_stops_a_sweep(tmp_path, monkeypatch,
                                                                                             capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "sweep"
    argv = ["sweep", "--config", "configs/demo.yaml", "--reducers", "uniform", "--num-frames", "8", "--out", str(out)]
    line, pid = refused_while_held(argv, out, "dyto sweep", capsys)
    assert_names_holder(line, out, "dyto sweep", pid, "sweep into another --out")
    assert sorted(p.name for p in out.iterdir()) == ["run.lock"]  # no cell folder was touched

    # a cell someone predicts into
    line, pid = refused_while_held(argv, out / "uniform-default", "dyto predict", capsys)
    assert_names_holder(line, out / "uniform-default", "dyto predict", pid, "sweep into another --out")
    assert sorted(p.name for p in (out / "uniform-default").iterdir()) == ["run.lock"]


def test_a_run_a_launcher_started_locks_in_setup_and_a_refused_one_writes_nothing(tmp_path, monkeypatch, capsys):
    """Under torchrun or srun every rank runs the CLI, so the lock is taken by rank 0 in the
    writer's setup and the outcome broadcast to all ranks; RANK in the environment (as torchrun
    sets it) sends a one-process run down that path."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("RANK", "0")
    run_dir = tmp_path / "late"
    line, pid = refused_while_held(["predict", "--config", "configs/demo.yaml", "--output.output_dir", str(tmp_path),
                                    "--output.run_name", "late", "--trainer.enable_progress_bar", "false"],
                                   run_dir, "dyto predict", capsys)
    assert_names_holder(line, run_dir, "dyto predict", pid, "pick another --output.run_name")
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.lock"]  # no config.yaml, no fingerprint, no log


def test_the_holder_beats_and_an_empty_lock_file_is_honoured_until_it_is_stale(tmp_path, monkeypatch):
    from dyto import runlock

    monkeypatch.setenv("DYTO_RUN_LOCK", "file")
    monkeypatch.setattr(runlock, "HEARTBEAT_S", 0.05)
    folder = RunFolder(tmp_path / "run")
    with folder.lock("dyto predict"):
        first = json.loads(folder.lock_file.read_text())["heartbeat"]
        time.sleep(0.5)
        assert json.loads(folder.lock_file.read_text())["heartbeat"] > first
    folder.lock_file.write_text("")  # a holder that died between creating and writing its record
    with pytest.raises(RunLocked, match="whose lock record .*run.lock cannot be read yet"), folder.lock("x"):
        pass
    old = time.time() - STALE_S - 1
    os.utime(folder.lock_file, (old, old))
    with folder.lock("dyto predict"):
        assert json.loads(folder.lock_file.read_text())["pid"] == os.getpid()
