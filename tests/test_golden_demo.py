"""Golden demo: the offline demo (configs/demo_random.yaml, tiny RANDOM-WEIGHT LLaVA-NeXT, DyTo) must
keep answering exactly as the code before the backbone refactor did.

The fixture ``tests/fixtures/golden/demo_llava_next.json`` was written by the pre-refactor
``DyToVideoQA`` (commit "golden demo fixture"), so any change in what reaches the LLM (frames,
CLIP layer, CLS handling, projector, prompt text, tokenisation, splicing, generation settings)
shows up here as a changed answer or token count. To rewrite it deliberately:

    DYTO_WRITE_GOLDEN=1 python -m pytest -q tests/test_golden_demo.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dyto.records import read_jsonl

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "fixtures" / "golden" / "demo_llava_next.json"
FIELDS = ("status", "prediction", "prediction2", "conv_mode", "prompt_tokens", "visual_tokens_in",
          "visual_tokens_out", "frames_kept", "frames_sampled", "model")


def run_demo(tmp_path: Path, *extra: str) -> dict[str, dict]:
    from dyto.cli import main

    main(["predict", "--config", str(REPO / "configs" / "demo_random.yaml"), "--data.init_args.num_workers", "0",
          "--data.init_args.records", str(REPO / "dyto" / "assets" / "demo" / "questions.jsonl"),
          "--data.init_args.video_root", str(REPO / "dyto" / "assets" / "demo"),
          "--output.output_dir", str(tmp_path), "--output.run_name", "golden", *extra])
    merged = read_jsonl(tmp_path / "golden" / "artifacts" / "predictions.jsonl")
    return {r["id"]: {k: r.get(k) for k in FIELDS} for r in merged}


# the demo as shipped, and DyTo on the projected CLS descriptor (the tower's CLS path)
CASES = {"demo": [], "cls_descriptor": ["--model.reducer.init_args.descriptor", "cls"]}


@pytest.mark.parametrize("case", sorted(CASES))
def test_demo_predictions_match_the_golden_file(tmp_path, monkeypatch, case):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    got = run_demo(tmp_path, *CASES[case])
    stored = json.loads(GOLDEN.read_text(encoding="utf-8")) if GOLDEN.exists() else {}
    if os.environ.get("DYTO_WRITE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        stored[case] = got
        GOLDEN.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        pytest.skip(f"wrote {case} to {GOLDEN}")
    expected = stored[case]
    assert set(got) == set(expected)
    assert all(r["status"] == "ok" for r in expected.values())  # the golden file holds real answers
    for sample_id, record in expected.items():
        assert got[sample_id] == record, sample_id
