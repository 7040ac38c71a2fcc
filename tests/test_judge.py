"""The GPT judge against a real loopback HTTP server: faults, budgets, cache, resume, secrets."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dyto.evaluation.judge import Judge, JudgeConfig, JudgeUnavailable, load_cache
from dyto.evaluation.judge_cli import judge_main
from dyto.evaluation.judge_prompts import PROMPTS, parse_reply
from dyto.evaluation.metrics import compute_metrics
from dyto.records import prediction_record, read_jsonl, write_jsonl
from judge_server import ERRORS, JudgeServer

KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"


def make_preds(n_open=6):
    preds = [prediction_record({"id": f"o{i}", "benchmark": "msvd", "task": "open_ended", "question": f"what is {i}?",
                                "answer": "dog"}, status="ok", prediction="a dog" if i % 2 else "a cat")
             for i in range(n_open)]
    preds.append(prediction_record({"id": "g0", "benchmark": "vcgbench", "task": "vcg_generic", "question": "what?",
                                    "answer": "a man surfs"}, status="ok", prediction="a man is surfing"))
    preds.append(prediction_record({"id": "c0", "benchmark": "vcgbench", "task": "vcg_consistency", "question": "q1?",
                                    "question2": "q2?", "answer": "a man surfs"}, status="ok",
                                   prediction="surfing", prediction2="he surfs"))
    preds.append(prediction_record({"id": "x0", "benchmark": "msvd", "task": "open_ended", "question": "q", "answer": "a"},
                                   status="video_missing"))
    return preds  # n_open + 3 + 1 judge jobs; x0 is never judged


def config(url, **kw):
    return JudgeConfig(**{"base_url": url, "timeout": 0.5, "max_attempts": 2, "backoff": 0.01, "concurrency": 8, **kw})


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def test_parse_reply_accepts_what_real_judges_return():
    assert parse_reply("{'pred': 'yes', 'score': 4.8}")[:3] == ("yes", 4, "ok")
    assert parse_reply("{''score': 4.8}")[:3] == (None, 4, "ok")  # the protocol's own malformed example
    assert parse_reply("Sure! {'pred': 'YES', 'score': 3}. Hope it helps")[:3] == ("yes", 3, "ok")
    assert parse_reply('```json\n{"pred": "No", "score": "2"}\n```')[:3] == ("no", 2, "ok")
    assert parse_reply("Yes.")[:3] == ("yes", None, "ok")
    assert parse_reply("{'pred': 'yes'}")[:3] == ("yes", None, "ok")  # the reference counts it (score 0)
    assert parse_reply("I cannot evaluate this.").status == "unparsable"
    assert parse_reply(None).status == "unparsable"
    assert parse_reply("{'score': 3}").strict and not parse_reply("{''score': 3}").strict


def test_prompts_carry_the_protocol_structure():
    for dim, p in PROMPTS.items():
        assert "##INSTRUCTIONS: - " in p.system and p.system.startswith("You are an intelligent chatbot")
        msgs = p.messages("Q?", "A.", "P.", question2="Q2?", prediction2="P2.")
        assert msgs[1]["content"].startswith("Please evaluate the following video-based question-answer pair:\n\n")
        example = "{'pred': 'yes', 'score': 4.8}" if dim == "default" else "{''score': 4.8}"
        assert msgs[1]["content"].endswith(f"For example, your response should look like this: {example}.")
    user = PROMPTS["consistency"].messages("Q1?", "A.", "P1.", question2="Q2?", prediction2="P2.")[1]["content"]
    assert "Question 1: Q1?\nQuestion 2: Q2?\nCorrect Answer: A.\nPredicted Answer to Question 1: P1.\n" \
           "Predicted Answer to Question 2: P2.\n\n" in user
    # braces in model outputs are data, not template fields
    assert "{x}" in PROMPTS["default"].messages("{x}", "a", "b")[1]["content"]


@pytest.mark.parametrize("behaviour,final", [("good", "ok"), ("malformed", "ok"), ("garbage", "unparsable"),
                                             ("429", "failed"), ("500", "failed"), ("hang", "failed"),
                                             ("close", "failed")])
def test_every_item_ends_judged_or_unjudged_under_each_fault(tmp_path, behaviour, final):
    preds = make_preds()
    with JudgeServer(behaviour, hang_s=1.0) as srv:
        stats = Judge(config(srv.base_url)).run(preds, tmp_path / "j.jsonl")
    jobs = 6 + 3 + 1
    assert stats.judged + stats.unparsable + stats.failed + stats.unjudged == jobs
    assert getattr(stats, "judged" if final == "ok" else final) == jobs
    recs = list(read_jsonl(tmp_path / "j.jsonl"))
    assert len(recs) == jobs and {r["status"] for r in recs} == {final}
    # failed: both attempts used; unparsable: asked again up to the reference's bound (100 asks
    # for each of the 6 open-ended items, 2 for each of the 4 VCGBench judgements)
    assert len(srv.requests) == {"failed": jobs * 2, "unparsable": 6 * 100 + 4 * 2}.get(final, jobs)
    if final == "unparsable":
        assert sorted({r["asks"] for r in recs}) == [2, 100] and stats.reasked == 6 * 99 + 4
    m = compute_metrics(preds, recs)["benchmarks"]
    for entry in m.values():
        for d in entry["judged"].values():
            assert d["judged"] + d["unparsable"] + d["unjudged"] + d["failed"] == d["items"]
            assert d["unjudged"] == (d["ok"] if final == "failed" else 0)


def test_retry_after_is_honoured_then_success(tmp_path):
    with JudgeServer(lambda n: "429" if n < 2 else "good", retry_after="0.3") as srv:
        stats = Judge(config(srv.base_url, concurrency=1, max_attempts=4)).run(make_preds(1), tmp_path / "j.jsonl")
        t = [r["t"] for r in srv.requests]
    assert stats.judged == 5 and stats.failed == 0 and stats.errors == {"RateLimitError": 2}
    assert t[1] - t[0] >= 0.29 and t[2] - t[1] >= 0.29  # backoff alone would be 0.01 s, 0.02 s


def test_cache_rerun_and_changed_prediction(tmp_path):
    preds, cache = make_preds(), tmp_path / "j.jsonl"
    with JudgeServer("good") as srv:
        Judge(config(srv.base_url)).run(preds, cache)
        first = len(srv.requests)
        again = Judge(config(srv.base_url)).run(preds, cache)
        assert len(srv.requests) == first and again.cached == first and again.requests == 0
        preds[0] = dict(preds[0], prediction="a changed answer")
        Judge(config(srv.base_url)).run(preds, cache)
        assert len(srv.requests) == first + 1 and "a changed answer" in srv.user_messages()[-1]
        # another judge model is another cache key
        Judge(config(srv.base_url, model="other-judge")).run(preds, cache)
        assert len(srv.requests) == 2 * first + 1


def test_failed_items_are_retried_on_rerun(tmp_path):
    preds, cache = make_preds(), tmp_path / "j.jsonl"
    with JudgeServer("500") as srv:
        assert Judge(config(srv.base_url)).run(preds, cache).failed == 10
        assert load_cache(cache) == {}
        srv.behaviour = "good"
        assert Judge(config(srv.base_url)).run(preds, cache).judged == 10


def test_request_budget_stops_cleanly_and_resume_never_repeats(tmp_path):
    preds, cache = make_preds(), tmp_path / "j.jsonl"
    with JudgeServer("good") as srv:
        stats = Judge(config(srv.base_url, max_requests=4, concurrency=2)).run(preds, cache)
        assert stats.requests == 4 and stats.judged == 4 and stats.unjudged == 6 and "request budget" in stats.stopped
        assert len(srv.requests) == 4
        m = compute_metrics(preds, read_jsonl(cache))["benchmarks"]["msvd"]["judged"]["default"]
        assert m["judged"] + m["unjudged"] == m["ok"]
        Judge(config(srv.base_url)).run(preds, cache)
        msgs = srv.user_messages()
    assert len(msgs) == 10 and len(set(msgs)) == 10


def test_cost_budget(tmp_path):
    with JudgeServer("good") as srv:  # 100 + 10 tokens per reply at $10,000/M = $1.10 per request
        stats = Judge(config(srv.base_url, concurrency=1, max_cost=2.0, price_per_mtok=(1e4, 1e4))).run(
            make_preds(), tmp_path / "j.jsonl")
    assert stats.requests == 2 and stats.cost_usd == pytest.approx(2.2) and "cost budget" in stats.stopped
    with pytest.raises(ValueError, match="price"):
        Judge(JudgeConfig(model="unknown-model", max_cost=1.0, base_url="http://127.0.0.1:9/v1"))


def test_api_key_is_sent_but_never_written(tmp_path, capsys):
    run = tmp_path / "run"
    write_jsonl(run / "artifacts" / "predictions.jsonl", make_preds())
    with JudgeServer("good") as srv:
        assert judge_main(["--predictions", str(run), "--base-url", srv.base_url, "--timeout", "0.5"]) == 0
        assert {r["authorization"] for r in srv.requests} == {f"Bearer {KEY}"}
        judge = Judge(config(srv.base_url))
    out = capsys.readouterr()
    assert KEY not in out.out + out.err and KEY not in repr(judge) and KEY not in repr(judge.config)
    files = [p for p in run.rglob("*") if p.is_file()]
    assert {"judgments.jsonl", "results.json", "report.md"} <= {p.name for p in files}
    assert all(KEY not in p.read_text(encoding="utf-8") for p in files)


def test_no_judge_configured(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(JudgeUnavailable):
        Judge(JudgeConfig())


def test_sigkill_half_way_then_restart_repeats_no_finished_item(tmp_path):
    run = tmp_path / "run"
    preds = make_preds(40)
    write_jsonl(run / "artifacts" / "predictions.jsonl", preds)
    cache = run / "eval_save_dir" / "judgments.jsonl"
    with JudgeServer("good", delay_s=0.05) as srv:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
        proc = subprocess.Popen([sys.executable, "-m", "dyto.evaluation.judge_cli", "--predictions", str(run),
                                 "--base-url", srv.base_url, "--concurrency", "2"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 10):
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        finished = list(read_jsonl(cache))
        assert 10 <= len(finished) < 44, "the judge finished before it could be killed"
        srv.delay_s = 0
        assert judge_main(["--predictions", str(run), "--base-url", srv.base_url]) == 0
        msgs = srv.user_messages()
    final = load_cache(cache)
    assert len(final) == 44  # every job judged exactly once in the cache
    done_first = {r["input_hash"] for r in finished}
    by_hash = {h: r for h, r in final.items()}
    for h in done_first:  # each item finished before the kill was asked exactly once, ever
        rec = by_hash[h]
        pred = next(p for p in preds if p["id"] == rec["id"])
        assert sum(f"Predicted Answer: {pred['prediction']}\n" in m and f"Question: {pred['question']}\n" in m
                   for m in msgs) == 1
    assert len(msgs) <= 44 + 2  # at most the two requests in flight at the kill are repeated


def test_torn_cache_tail_is_rejudged_and_cut_off(tmp_path):
    """A run killed mid-write leaves a torn last line: the rerun re-judges that item only and
    appends on a fresh line, so the cache stays readable."""
    preds, cache = make_preds(), tmp_path / "j.jsonl"
    with JudgeServer("good") as srv:
        Judge(config(srv.base_url)).run(preds, cache)
        lines = cache.read_text(encoding="utf-8").splitlines(keepends=True)
        torn = lines[-1][: len(lines[-1]) // 2]  # half of the last record, no newline
        cache.write_text("".join(lines[:-1]) + torn, encoding="utf-8")
        before = len(srv.requests)
        stats = Judge(config(srv.base_url)).run(preds, cache)
        assert len(srv.requests) == before + 1 and stats.judged == 1 and stats.cached == 9
    text = cache.read_text(encoding="utf-8")
    assert text.endswith("\n") and torn + "\n" not in text  # cut off, not glued to the next record
    recs = [json.loads(line) for line in text.splitlines()]  # every line is valid JSON
    assert len(recs) == 10 and len(load_cache(cache)) == 10


def test_judgment_records_say_whether_the_reply_parsed_strictly(tmp_path):
    for behaviour, strict in (("good", True), ("malformed", False)):
        cache = tmp_path / f"{behaviour}.jsonl"
        with JudgeServer(behaviour) as srv:
            Judge(config(srv.base_url)).run(make_preds(2), cache)
        recs = list(read_jsonl(cache))
        assert recs and {r["strict"] for r in recs} == {strict}
        # metrics count lenient parses from the stored flag
        m = compute_metrics(make_preds(2), recs)["benchmarks"]["msvd"]["judged"]["default"]
        assert m["lenient"] == (0 if strict else m["judged"])


def test_judge_cli_choice_mode(tmp_path, capsys):
    run = tmp_path / "run"
    write_jsonl(run / "artifacts" / "predictions.jsonl", [
        prediction_record({"id": "m0", "benchmark": "nextqa", "task": "multiple_choice", "question": "q",
                           "answer": "a", "options": list("abcde"), "answer_index": 0},
                          status="ok", prediction="a man walks")])
    assert judge_main(["--predictions", str(run), "--choice-mode", "strict"]) == 0
    res = json.loads((run / "logs" / "results.json").read_text())
    assert res["choice_mode"] == "strict" and res["metrics"]["choice_mode"] == "strict"
    assert res["metrics"]["benchmarks"]["nextqa"]["multiple_choice"]["accuracy"] == 0.0  # reference reads "a" as A
    with pytest.raises(SystemExit):
        judge_main(["--predictions", str(run), "--choice-mode", "nope"])


# -- the reference protocol: temperature, re-asks, errors no retry can fix ------------------------

def test_default_request_sends_no_temperature_and_a_set_one_is_sent_and_keyed(tmp_path):
    cache = tmp_path / "j.jsonl"
    with JudgeServer() as srv:
        Judge(config(srv.base_url)).run(make_preds(1), cache)
        assert srv.requests and all("temperature" not in r["body"] for r in srv.requests)
        n = len(srv.requests)
        Judge(config(srv.base_url, temperature=0.0)).run(make_preds(1), cache)  # another key: judged again
        assert len(srv.requests) == 2 * n
        assert all(r["body"]["temperature"] == 0 for r in srv.requests[n:])
        Judge(config(srv.base_url, temperature=0.0)).run(make_preds(1), cache)  # cached now
        assert len(srv.requests) == 2 * n
    recs = list(read_jsonl(cache))
    assert {r["temperature"] for r in recs} == {None, 0.0}
    assert len({r["input_hash"] for r in recs}) == len(recs)


def test_unparsable_reply_is_asked_again_up_to_the_bound(tmp_path):
    preds = make_preds(1)[:1]  # one open-ended item
    with JudgeServer(lambda n: "garbage" if n < 2 else "good") as srv:  # parses at the 3rd ask
        stats = Judge(config(srv.base_url, max_asks=5)).run(preds, tmp_path / "a.jsonl")
    assert len(srv.requests) == 3 and stats.judged == 1 and stats.reasked == 2
    (rec,) = read_jsonl(tmp_path / "a.jsonl")
    assert rec["status"] == "ok" and rec["asks"] == 3
    with JudgeServer("garbage") as srv:  # never parses: asked exactly max_asks times, then unparsable
        stats = Judge(config(srv.base_url, max_asks=4)).run(preds, tmp_path / "b.jsonl")
        assert len(srv.requests) == 4 and stats.unparsable == 1
        assert load_cache(tmp_path / "b.jsonl", config(srv.base_url, max_asks=4))  # final at this bound
        assert not load_cache(tmp_path / "b.jsonl", config(srv.base_url, max_asks=6))  # not at a higher one
        Judge(config(srv.base_url, max_asks=4)).run(preds, tmp_path / "b.jsonl")
        assert len(srv.requests) == 4  # final: not asked again
    (rec,) = read_jsonl(tmp_path / "b.jsonl")
    assert rec["status"] == "unparsable" and rec["asks"] == 4


def test_request_budget_interrupting_re_asks_leaves_the_item_open(tmp_path):
    preds = make_preds(1)[:1]
    with JudgeServer("garbage") as srv:
        stats = Judge(config(srv.base_url, max_asks=5, max_requests=2)).run(preds, tmp_path / "j.jsonl")
        assert len(srv.requests) == 2 and stats.stopped
        (rec,) = read_jsonl(tmp_path / "j.jsonl")
        assert rec["status"] == "unparsable" and rec["asks"] == 2
        Judge(config(srv.base_url, max_asks=5)).run(preds, tmp_path / "j.jsonl")  # the rerun goes on
        assert len(srv.requests) == 2 + 5


@pytest.mark.parametrize("mode,fix", [("404", "judge model"), ("401", "OPENAI_API_KEY"),
                                      ("400model", "settings the server rejects")])
def test_an_error_no_retry_can_fix_stops_after_one_request(tmp_path, mode, fix):
    preds = make_preds(50)
    with JudgeServer(mode) as srv:
        stats = Judge(config(srv.base_url, concurrency=16)).run(preds, tmp_path / "j.jsonl")
        assert len(srv.requests) == 1
    assert stats.fatal and "\n" not in stats.fatal and fix in stats.fatal and stats.unjudged == 50 + 3 + 1
    assert stats.errors == {{"404": "NotFoundError", "401": "AuthenticationError",
                             "400model": "BadRequestError"}[mode]: 1}
    assert ERRORS[mode]["message"].split(":")[0] in stats.fatal  # the server's own words
    assert not list(read_jsonl(tmp_path / "j.jsonl"))  # nothing recorded: all of it is left to judge


def test_dyto_judge_exits_non_zero_in_one_line_on_a_retired_model(tmp_path, capsys):
    run = tmp_path / "run"
    write_jsonl(run / "artifacts" / "predictions.jsonl", make_preds(50))
    with JudgeServer("404") as srv:
        code = judge_main(["--predictions", str(run), "--base-url", srv.base_url, "--no-progress"])
        assert len(srv.requests) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "deprecated" in err[0] and "--model" in err[0]
    results = json.loads((run / "logs" / "results.json").read_text())  # what is left is reported unjudged
    assert results["judge_run"]["fatal"] and results["judge_run"]["unjudged"] == 54


def test_a_400_about_one_item_fails_only_that_item(tmp_path):
    with JudgeServer(lambda n: "400item" if n == 1 else "good") as srv:
        stats = Judge(config(srv.base_url, concurrency=1)).run(make_preds(3), tmp_path / "j.jsonl")
    assert stats.fatal is None and stats.failed == 1 and stats.judged == 3 + 3
    assert stats.errors == {"BadRequestError": 1}


def test_dyto_judge_shows_progress(tmp_path, capsys):
    run = tmp_path / "run"
    write_jsonl(run / "artifacts" / "predictions.jsonl", make_preds(4))
    with JudgeServer() as srv:
        assert judge_main(["--predictions", str(run), "--base-url", srv.base_url, "--temperature", "0"]) == 0
    err = capsys.readouterr().err
    assert "8/8" in err and "judgement/s" in err  # 4 open-ended + 3 generic dimensions + 1 consistency
    assert "$" in err and "retries 0" in err
    results = json.loads((run / "logs" / "results.json").read_text())
    assert results["judge"]["temperature"] == 0.0 and "temperature=0" in results["metrics"]["judge_model"]


def test_every_judge_setting_is_a_flag_of_both_clis():
    from dataclasses import fields

    from dyto.callbacks import EvaluateCallback
    from dyto.evaluation.judge_cli import build_parser
    from jsonargparse import ArgumentParser

    names = [f.name for f in fields(JudgeConfig)]
    flags = {a.dest for a in build_parser()._actions}
    assert set(names) <= flags
    parser = ArgumentParser()
    parser.add_class_arguments(EvaluateCallback, "evaluation")
    args = ["--evaluation.judge.temperature", "0", "--evaluation.judge.price_per_mtok", "[1, 2]",
            "--evaluation.judge.timeout", "5", "--evaluation.judge.max_asks", "3"]
    cb = parser.instantiate_classes(parser.parse_args(args)).evaluation
    assert cb.judge_config == JudgeConfig(temperature=0.0, price_per_mtok=(1.0, 2.0), timeout=5.0, max_asks=3)
    for name in names:  # reachable by name from dyto predict
        assert f"--evaluation.judge.{name}" in parser.format_help()


def dead_port() -> str:
    """The base URL of a loopback port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_dyto_judge_against_a_dead_port_exits_non_zero_naming_the_address(tmp_path, capsys):
    run, url = tmp_path / "run", dead_port()
    write_jsonl(run / "artifacts" / "predictions.jsonl", make_preds(18))
    code = judge_main(["--predictions", str(run), "--base-url", url, "--model", "m", "--backoff", "0.01",
                       "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"dyto judge: the judge server at {url} could not be reached")
    assert "nothing was judged" in err[0] and "--base-url" in err[0]
    run_stats = json.loads((run / "logs" / "results.json").read_text())["judge_run"]
    assert run_stats["unreachable"] == url and run_stats["unjudged"] == 18 + 3 + 1
    assert run_stats["errors"] == {"APIConnectionError": 6}  # one item's attempts, then the run stopped
    assert "could not be reached" in (run / "logs" / "report.md").read_text()


def test_a_partial_outage_ends_with_the_count_and_a_rerun_judges_the_rest(tmp_path, capsys):
    """The server answers 3 requests, then goes away (its port closes): the run stops at the first
    item no attempt could reach, says how many verdicts it got and how many are left; the same
    command against a server that is back judges exactly what is left."""
    import threading

    run = tmp_path / "run"
    write_jsonl(run / "artifacts" / "predictions.jsonl", make_preds(8))  # 12 judgements
    srv = JudgeServer()

    def behaviour(n):
        if n < 3:
            return "good"
        if n == 3:
            threading.Thread(target=srv.stop).start()  # the port closes while this connection is cut
        return "close"

    srv.behaviour = behaviour
    srv.start()
    args = ["--predictions", str(run), "--concurrency", "1", "--max-attempts", "2", "--backoff", "0.3",
            "--no-progress"]
    assert judge_main([*args, "--base-url", srv.base_url]) == 0
    err = capsys.readouterr().err
    stats = json.loads((run / "logs" / "results.json").read_text())["judge_run"]
    assert stats["judged"] == 3 and stats["unreachable"] == srv.base_url and stats["fatal"] is None
    assert stats["failed"] == 1 and stats["unjudged"] == 8  # the cut one failed; the next could not connect
    assert "stopped answering after 3 verdicts this run; 9 judgements are left: rerun" in err
    with JudgeServer() as back:
        assert judge_main([*args, "--base-url", back.base_url]) == 0
        assert len(back.requests) == 9
    stats = json.loads((run / "logs" / "results.json").read_text())["judge_run"]
    assert stats["cached"] == 3 and stats["judged"] == 9 and stats["stopped"] is None
