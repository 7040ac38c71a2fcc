"""compute_metrics against hand-computed values on a small, deliberately messy set."""

import pytest

from dyto.evaluation.judge import input_hash, judge_inputs
from dyto.evaluation.judge_prompts import PROMPT_VERSION
from dyto.evaluation.metrics import compute_metrics, per_item, question_type
from dyto.records import prediction_record

MODEL = "gpt-3.5-turbo-0125"


def pred(id, bench, task, status="ok", prediction="x", **qa):
    base = {"id": id, "benchmark": bench, "task": task, "question": f"q {id}", "answer": qa.pop("answer", "a"),
            "options": qa.pop("options", None), "answer_index": qa.pop("answer_index", None),
            "question2": qa.pop("question2", None), "meta": qa.pop("meta", {})}
    return prediction_record(base, status=status, prediction=prediction, **qa)


def verdict(p, dim, verdict=None, score=None, status="ok", raw="{'pred': 'yes', 'score': 4}"):
    fields = dict(judge_inputs(p))[dim]
    return {"id": p["id"], "dimension": dim, "judge_model": MODEL, "prompt_version": PROMPT_VERSION[dim],
            "input_hash": input_hash(MODEL, PROMPT_VERSION[dim], dim, fields), "verdict": verdict,
            "score": score, "raw": raw, "status": status, "error": None}


@pytest.fixture
def data():
    oe = [pred(f"o{i}", "msvd", "open_ended") for i in range(1, 6)] + [pred("o6", "msvd", "open_ended", "video_missing", None)]
    stale = pred("o2", "msvd", "open_ended", prediction="an older prediction")
    js = [verdict(oe[0], "default", "yes", 4), verdict(oe[1], "default", "no", 1),
          verdict(oe[2], "default", "yes", None, raw="{'pred': 'yes'}"),  # no score: counts 0, verdict ignored
          verdict(oe[3], "default", status="unparsable", raw="I cannot"),
          dict(verdict(oe[4], "default"), status="failed", raw=None),  # failed: stays unjudged
          verdict(stale, "default", "yes", 5)]  # for an older prediction: must not be used
    opts = list("abcde")
    mc = [pred("m1", "nextqa", "multiple_choice", prediction="A) x", options=opts, answer_index=0, meta={"question_type": "CW"}),
          pred("m2", "nextqa", "multiple_choice", prediction="B", options=opts, answer_index=1, meta={"question_type": "TP"}),
          pred("m3", "nextqa", "multiple_choice", prediction="C) y", options=opts, answer_index=1, meta={"question_type": "TN"}),
          pred("m4", "nextqa", "multiple_choice", prediction="xyz", options=opts, answer_index=1, meta={"question_type": "DL"}),
          pred("m5", "nextqa", "multiple_choice", "video_missing", None, options=opts, answer_index=1, meta={"question_type": "CH"}),
          pred("v1", "videomme", "multiple_choice", prediction="A", options=opts[:4], answer_index=0, meta={"duration": "short"}),
          pred("v2", "videomme", "multiple_choice", prediction="B", options=opts[:4], answer_index=0, meta={"duration": "long"})]
    g1, g2 = pred("g1", "vcgbench", "vcg_generic"), pred("g2", "vcgbench", "vcg_generic")
    t1 = pred("t1", "vcgbench", "vcg_temporal")
    c1 = pred("c1", "vcgbench", "vcg_consistency", question2="q2", prediction2="y")
    js += [verdict(g1, "correctness", score=3), verdict(g2, "correctness", score=4),
           verdict(g1, "detailed_orientation", score=2), verdict(g2, "detailed_orientation", score=2),
           verdict(g1, "context", score=5), verdict(g2, "context", status="unparsable", raw="??"),
           verdict(t1, "temporal", score=1), verdict(c1, "consistency", score=4)]
    return oe + mc + [g1, g2, t1, c1], js


def test_open_ended_reference_and_ours(data):
    m = compute_metrics(*data)["benchmarks"]["msvd"]
    d = m["judged"]["default"]
    assert m["status"] == {"ok": 5, "video_missing": 1}
    assert (d["items"], d["ok"], d["failed"], d["judged"], d["unparsable"], d["unjudged"]) == (6, 5, 1, 3, 1, 1)
    assert (d["yes"], d["no"]) == (1, 1)
    assert d["accuracy"] == pytest.approx(50.0)  # yes / (yes + no), verdicts with a score only
    assert d["accuracy_all"] == pytest.approx(100 * 2 / 6)  # o1 and o3 said yes, over all six items
    assert d["score"] == pytest.approx((4 + 1 + 0) / 3)


def test_multiple_choice_breakdowns(data):
    m = compute_metrics(*data)["benchmarks"]
    mc = m["nextqa"]["multiple_choice"]
    assert (mc["items"], mc["ok"], mc["correct"], mc["unparsed"]) == (5, 4, 2, 1)
    assert mc["accuracy"] == pytest.approx(50.0) and mc["accuracy_all"] == pytest.approx(40.0)
    assert set(mc["by_type"]) == {"CW", "TN", "DL", "CH"}  # TP merged into TN
    assert mc["by_type"]["TN"]["items"] == 2 and mc["by_type"]["TN"]["accuracy"] == pytest.approx(50.0)
    causal = mc["by_group"]["causal"]
    assert (causal["items"], causal["ok"], causal["accuracy"], causal["accuracy_all"]) == (2, 1, 100.0, 50.0)
    vm = m["videomme"]["multiple_choice"]
    assert vm["by_duration"]["short"]["accuracy"] == 100.0 and vm["by_duration"]["long"]["accuracy"] == 0.0


def test_vcgbench_dimensions_and_average(data):
    v = compute_metrics(*data)["benchmarks"]["vcgbench"]
    scores = {d: v["judged"][d]["score"] for d in v["judged"]}
    assert scores == {"correctness": 3.5, "detailed_orientation": 2.0, "context": 5.0, "temporal": 1.0, "consistency": 4.0}
    assert v["judged"]["context"]["unparsable"] == 1
    assert v["vcgbench_average"] == pytest.approx((3.5 + 2 + 5 + 1 + 4) / 5)


def test_per_item_and_question_types(data):
    items = per_item(*data)
    assert items["o1"] == {"verdict": "yes", "score": 4.0}
    assert items["o5"]["verdict"] == "unjudged" and items["o4"]["verdict"] == "unparsable"
    assert items["o6"]["verdict"] == "video_missing"
    assert items["m3"]["verdict"] == "wrong" and items["m4"]["verdict"] == "unparsed"
    assert question_type({"question_type": "Interaction_T1"}) == "Interaction"
    assert question_type({"question_type": "TP"}) == "TN" and question_type({}) is None


def test_several_judges_need_a_choice(data):
    preds, js = data
    with pytest.raises(ValueError, match="several judges"):
        compute_metrics(preds, js + [dict(js[0], judge_model="gpt-4o")])
    m = compute_metrics(preds, js + [dict(js[0], judge_model="gpt-4o")], judge_model=MODEL)
    assert m["benchmarks"]["msvd"]["judged"]["default"]["judged"] == 3


def test_vcgbench_average_is_reported_once(data):
    m = compute_metrics(*data)
    assert "vcgbench_average" in m["benchmarks"]["vcgbench"]
    assert "vcgbench_average" not in m  # no second, cross-benchmark copy of the same number


def test_videomme_sub_category_breakdown():
    opts = list("abcd")
    preds = [pred("v1", "videomme", "multiple_choice", prediction="A", options=opts, answer_index=0,
                  meta={"duration": "short", "sub_category": "Humanity & History", "task_type": "Counting Problem"}),
             pred("v2", "videomme", "multiple_choice", prediction="B", options=opts, answer_index=0,
                  meta={"duration": "short", "sub_category": "Astronomy", "task_type": "Counting Problem"})]
    vm = compute_metrics(preds)["benchmarks"]["videomme"]["multiple_choice"]
    assert vm["by_sub_category"]["Humanity & History"]["accuracy"] == 100.0
    assert vm["by_sub_category"]["Astronomy"]["accuracy"] == 0.0
    assert vm["by_task_type"]["Counting Problem"]["items"] == 2


def test_type_breakdowns_read_the_preparers_fields():
    from dyto.datamodules.benchmarks.nextqa import report_type
    from dyto.datamodules.benchmarks.star import star_category

    opts = list("abcde")
    preds = [pred("n1", "nextqa", "multiple_choice", prediction="A", options=opts, answer_index=0,
                  meta={"question_type": "CW", "report_type": "TN"}),  # the stored type wins over the raw code
             pred("s1", "star", "multiple_choice", prediction="A", options=opts[:4], answer_index=0,
                  meta={"question_type": "Interaction_T1", "category": "Sequence"})]
    m = compute_metrics(preds)["benchmarks"]
    assert set(m["nextqa"]["multiple_choice"]["by_type"]) == {"TN"}
    assert set(m["nextqa"]["multiple_choice"]["by_group"]) == {"temporal"}
    assert set(m["star"]["multiple_choice"]["by_type"]) == {"Sequence"}
    assert question_type({"question_type": "TP", "report_type": "TN"}) == "TN"
    assert report_type("TP") == "TN" and star_category("Feasibility_T4") == "Feasibility"


def test_lenient_comes_from_the_stored_strict_flag(data):
    preds, js = data
    o1 = js[0]  # raw "{'pred': 'yes', 'score': 4}" parses strictly
    assert compute_metrics(preds, js)["benchmarks"]["msvd"]["judged"]["default"]["lenient"] == 0
    js = [dict(o1, strict=False)] + js[1:]
    assert compute_metrics(preds, js)["benchmarks"]["msvd"]["judged"]["default"]["lenient"] == 1
    js = [dict(o1, strict=True, raw="Sure: {'pred': 'yes', 'score': 4}")] + js[1:]
    assert compute_metrics(preds, js)["benchmarks"]["msvd"]["judged"]["default"]["lenient"] == 0


def test_choice_mode_changes_multiple_choice_accuracy():
    opts = list("abcde")
    preds = [pred("m1", "nextqa", "multiple_choice", prediction="a man walks", options=opts, answer_index=0)]
    assert compute_metrics(preds)["benchmarks"]["nextqa"]["multiple_choice"]["accuracy"] == 100.0
    strict = compute_metrics(preds, choice_mode="strict")
    assert strict["choice_mode"] == "strict"
    assert strict["benchmarks"]["nextqa"]["multiple_choice"]["accuracy"] == 0.0
