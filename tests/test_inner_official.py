"""The inner stages' selection rules against figures the OFFICIAL implementations produced
(tests/fixtures/inner/PROVENANCE.md: FastV, DyCoke, PruneVid and HoliTom code at pinned commits,
run outside this project on seeded attention maps and hidden states). Each case feeds a stage the
same inputs the official code read, in the form dyto's loop hands them over (:class:`RowView`:
the stage's query rows, visual columns), and compares the kept indices (and HoliTom's merged
hidden states)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dyto.models.inner import RowView, build_inner_stage

FIXTURES = Path(__file__).parent / "fixtures" / "inner"
META = json.loads((FIXTURES / "official_selections.json").read_text())
T = load_file(str(FIXTURES / "official_selections.safetensors"))


def cases(prefix: str) -> list[str]:
    return sorted(k for k in META["cases"] if k.startswith(prefix))


def visual_kept(keep: torch.Tensor, start: int, length: int) -> list[int]:
    return [int(i) - start for i in keep if start <= i < start + length]


@pytest.mark.parametrize("case", cases("fastv"))
def test_fastv_keeps_what_the_official_code_keeps(case):
    m, att = META["cases"][case], T[f"{case}.attention"][0]                          # [H, S, S]
    start, length = m["start"], m["length"]
    stage = build_inner_stage("fastv", layer=2, ratio=m["ratio"])
    keep = stage.select(RowView(att[:, -1:, start:start + length], None, [length])).index
    official = T[f"{case}.keep"]
    assert keep.tolist() == visual_kept(official, start, length)
    assert len(official) == m["seq"] - length + len(keep)                           # every text row kept


@pytest.mark.parametrize("case", cases("holitom"))
def test_holitom_keeps_and_merges_as_the_official_code(case):
    m, att = META["cases"][case], T[f"{case}.attention"][0]
    start, length = m["start"], m["length"]
    hidden = T[f"{case}.hidden"][0]                                                  # [S, D]
    stage = build_inner_stage("holitom_inner", layer=18, ratio=m["ratio"])
    out = stage.select(RowView(att[:, -1:, start:start + length], hidden[start:start + length], [length]))
    official_keep, official_hidden = T[f"{case}.keep"], T[f"{case}.kept_hidden"]   # [k_total], [k_total, D]
    assert out.index.tolist() == visual_kept(official_keep, start, length)
    at_visual = [i for i, row in enumerate(official_keep.tolist()) if start <= row < start + length]
    assert torch.allclose(out.hidden, official_hidden[at_visual], atol=1e-6)
    text = [i for i, row in enumerate(official_keep.tolist()) if not start <= row < start + length]
    assert torch.equal(official_hidden[text], hidden[official_keep[text]])          # text rows untouched


@pytest.mark.parametrize("case", cases("prunevid"))
def test_prunevid_keeps_what_the_official_code_keeps(case):
    m, att = META["cases"][case], T[f"{case}.attention"][0]
    before, after = m["before"], m["after"]
    blocks = []  # the outer stage's layout: per window its static block (if any), then each frame's dynamic block
    for static, dynamic, window in m["windows"]:
        blocks += ([static] if static else []) + [dynamic // window] * window
    length = sum(blocks)
    assert att.shape[1] == before + length + after   # the fixture's rows: text, the video, text
    stage = build_inner_stage("prunevid_llm", layer=10, alpha=m["alpha"])
    view = RowView(att[:, before + length:, before:before + length], None, blocks)   # every query after the video
    keep = stage.select(view).index
    assert keep.tolist() == visual_kept(T[f"{case}.keep"], before, length)


@pytest.mark.parametrize("case", cases("dycoke"))
def test_dycoke_prunes_the_steps_the_official_code_prunes(case):
    m = META["cases"][case]
    start, length = m["start"], m["length"]
    stage, state = build_inner_stage("dycoke_kv", layer=3, ratio=m["ratio"]), {}
    for step, pruned in enumerate(m["pruned"]):
        att = T[f"{case}.step{step}.attention"][0]                                  # [H, 1, S]
        index = stage.select_step(RowView(att[:, :, start:start + length], None, [length], state))
        assert (index is not None) == pruned, step
        if pruned:
            official = T[f"{case}.step{step}.keep"]
            assert index.tolist() == sorted(visual_kept(official, start, length))
            assert len(official) == att.shape[-1] - length + len(index)             # text and new tokens all read
