"""The testbed: the shipped tiny TRAINED model on held-out synthetic clips, through `dyto synthetic`
and `dyto sweep` exactly as a user runs them. What is asserted is what the data makes true, with
margins under what was measured (docs/testbed.md, "Measured"):

* the shipped weights are the ones their TRAINING.md describes (sha256);
* unreduced (`concat-unreduced`, every token of every frame) the model is well above chance on
  clips it never saw;
* uniform frame sampling down to 10% of the tokens (`concat` at retention 0.1: 10 whole frames of
  100) misses most 2-3-frame flashes: it loses the flash questions the unreduced model gets
  right, and McNemar says so; DyTo at the same budget keeps the flash frames more often (its
  keyframe search follows feature change) and loses fewer;
* the cells' accuracies differ.
"""

from __future__ import annotations

import json
import re

import pytest

from dyto.cli import main
from dyto.models.tiny_trained import TRAINED_DIR, weights_sha256

CLIPS = 40  # held-out test-split clips 10..49 (the shipped demo is 0..9): 8 of each kind, 80 questions


def test_the_shipped_weights_are_the_ones_training_md_describes():
    record = (TRAINED_DIR / "TRAINING.md").read_text()
    stated = re.search(r"`model.safetensors` sha256: `([0-9a-f]{64})`", record).group(1)
    assert weights_sha256() == stated
    assert "python scripts/train_tiny.py --out dyto/assets/tiny_trained" in record


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("testbed")
    with pytest.raises(SystemExit) as done:
        main(["synthetic", "--out", str(tmp / "test"), "--start", "10", "--clips", str(CLIPS),
              "--records", str(tmp / "records.jsonl")])
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:
        main(["sweep", "--config", "configs/demo.yaml", "--data.init_args.records", str(tmp / "records.jsonl"),
              "--data.init_args.video_root", str(tmp / "test" / "videos"), "--data.init_args.num_workers", "0",
              "--reducers", "concat", "uniform", "dyto", "--retention", "0.1", "--resamples", "500",
              "--no-pictures", "--out", str(tmp / "sweep")])
    assert done.value.code in (0, None)
    cells = {c["cell"]: c for c in json.loads((tmp / "sweep" / "sweep.json").read_text())["cells"]}
    answers = {}
    for name in cells:
        rows = [json.loads(line) for line in (tmp / "sweep" / name / "artifacts" / "predictions.jsonl").open()]
        answers[name] = {r["id"]: r for r in rows}
    return tmp / "sweep", cells, answers


def right(record: dict) -> bool:
    """Multiple choice: the first letter of the answer is the right option's; open-ended: the word."""
    if record["task"] == "multiple_choice":
        return record["prediction"].strip()[:1] == "ABCD"[record["answer_index"]]
    return record["prediction"].strip().lower() == record["answer"].lower()


def flash_right(answers: dict, cell: str) -> int:
    return sum(right(r) for r in answers[cell].values() if r["meta"]["kind"] == "flash")


def test_the_unreduced_model_is_well_above_chance_on_held_out_clips(sweep):
    out, cells, answers = sweep
    unreduced = cells["concat-unreduced"]
    # multiple choice: chance is 1/2 on order questions and 1/4 on the others: 30% overall
    assert unreduced["ok"] == 2 * CLIPS and unreduced["accuracy"]["estimate"] >= 60.0
    open_ended = [right(r) for r in answers["concat-unreduced"].values() if r["task"] == "open_ended"]
    assert sum(open_ended) / len(open_ended) >= 0.6


def test_uniform_frame_sampling_loses_the_flashes_dyto_keeps(sweep):
    """``concat`` at 10% keeps 10 whole frames spread like ``np.linspace`` over the 100 (uniform frame
    sampling): a 2-3-frame flash falls between them in most clips."""
    out, cells, answers = sweep
    flash = [i for i, r in answers["concat-unreduced"].items() if r["meta"]["kind"] == "flash"]
    assert len(flash) == 2 * CLIPS // 5
    caught = [bool(set(answers["concat-retention0.1"][i]["frames_kept"]) & set(answers["concat-retention0.1"][i]
                                                                             ["meta"]["scene"]["flash"])) for i in flash]
    assert sum(caught) <= 0.4 * len(flash)
    unreduced, sampled, dyto = (flash_right(answers, c) for c in ("concat-unreduced", "concat-retention0.1",
                                                                   "dyto-retention0.1"))
    assert unreduced >= 0.7 * len(flash)
    assert sampled <= unreduced - 0.3 * len(flash)
    assert dyto >= sampled + 0.15 * len(flash)
    m = cells["concat-retention0.1"]["mcnemar"]
    assert m["items"] == CLIPS and m["only_baseline"] > m["only_run"] and m["p_value"] < 0.05


def test_the_sweep_table_differs_across_reducers(sweep):
    out, cells, answers = sweep
    accuracies = {name: c["accuracy"]["estimate"] for name, c in cells.items()}
    assert len(set(accuracies.values())) >= 3, accuracies
    table = (out / "sweep.md").read_text()
    assert "| McNemar b / c, p |" in table and "| concat-unreduced | concat | unreduced |" in table
