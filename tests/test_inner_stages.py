"""Inner-LLM stages (dyto/models/inner) on the tiny RANDOM-WEIGHT models of every family, on the CPU:

* a stage that keeps every token answers bitwise as Hugging Face's ``generate`` without a stage,
  alone and in a left-padded batch, for every registered stage on every backbone;
* FastV / PruneVid at layer K give the logits of an independent computation written here (the
  layers run one by one without a cache, eager attention read at the stage's layer, the kept rows
  selected by hand), for the prefill and for the next decoding step, with 1-D and M-RoPE positions;
* batched equals one question at a time, with pruning, for every stage;
* the cost arithmetic equals torch's own FLOP counter on a real decoder layer and the bytes of the
  loop's KV cache; the records, fingerprint and loop fallback of ``VideoQA``; the backbone hook.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import LogitsProcessor, LogitsProcessorList

from dyto.errors import ConfigError
from dyto.models import VideoQA
from dyto.models.backbone import build_backbone, list_backbones
from dyto.models.cost import kv_cache_bytes, layer_flops, prefill_flops, record_cost, text_shape
from dyto.models.inner import INNER_STAGES, InnerLoop, build_inner_stage, language_model, list_inner_stages
from dyto.models.inner.stages import FastVStage, PruneVidLLMStage
from dyto.reduction import ConcatReducer

QUESTIONS = [("open_ended", "what is happening in the video?", None),
             ("multiple_choice", "which one?", ["a cat", "a dog", "a very small bird"])]


def stage_layer(name: str) -> int:
    """A layer every stage can use in the 2-layer tiny models."""
    return 0 if name == "prunevid_llm" else 1


@pytest.fixture(scope="module")
def tiny():
    """Per family: (backbone, two LLM inputs of different lengths, a greedy config of 6 new tokens)."""
    out = {}
    torch.set_num_threads(1)
    for name in list_backbones():
        b = build_backbone(name)
        t = 4 * b.preprocessing.frames_per_patch
        pixels = torch.randn(t, 3, *b.preprocessing.size, generator=torch.Generator().manual_seed(0))
        encoded = b.encode(pixels)  # Qwen3-VL's DeepStack extras follow the reducer's assignment
        reduction = ConcatReducer(num_frames=t)(encoded.features, b.grid).reduce_extras(encoded.extras)
        inputs = [b.build_input(b.prompt(task, q, o), reduction) for task, q, o in QUESTIONS]
        config = VideoQA(b, reducer=ConcatReducer(num_frames=t), max_new_tokens=6).generation_config
        out[name] = (b, inputs, config)
    return out


def answers(b, stage, inputs, config):
    if stage is None:
        return b.generate(inputs, config)
    return b.tokenizer.batch_decode(InnerLoop(b, stage).generate_ids(inputs, config), skip_special_tokens=True)


@pytest.mark.parametrize("name", list_inner_stages())
@pytest.mark.parametrize("family", list_backbones())
def test_a_stage_that_keeps_everything_answers_as_generate_bitwise(tiny, family, name):
    b, inputs, config = tiny[family]
    stage = build_inner_stage(name, layer=stage_layer(name), **INNER_STAGES[name].keep_all)
    for group in ([inputs[0]], inputs):                         # alone, and left-padded in a batch
        assert answers(b, stage, group, config) == answers(b, None, group, config)
    rows = inputs[0].visual_rows
    visual = len(rows) if rows is not None else inputs[0].visual_span[1] - inputs[0].visual_span[0]
    assert inputs[0].counts.visual == [visual, visual] and inputs[0].counts.tokens == [inputs[0].length] * 2


@pytest.mark.parametrize("name", list_inner_stages())
@pytest.mark.parametrize("family", ["llava_next", "qwen2_5_vl", "internvl"])
def test_batched_equals_one_at_a_time_with_pruning(tiny, family, name):
    b, inputs, config = tiny[family]
    stage = build_inner_stage(name, layer=stage_layer(name))
    alone = [answers(b, stage, [i], config)[0] for i in inputs]
    counts = [i.counts for i in inputs]
    assert answers(b, stage, inputs, config) == alone
    assert [i.counts for i in inputs] == counts
    if stage.phase == "prefill":
        assert all(c.tokens[-1] < c.tokens[0] and c.visual[-1] < c.visual[0] for c in counts)


class FirstLogits(LogitsProcessor):
    def __init__(self):
        self.scores = []

    def __call__(self, input_ids, scores):
        self.scores.append(scores.clone())
        return scores


def independent(b, inp, keep_rule, attention_layer: int, steps: int = 2) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Logits of the prefill and of the next ``steps - 1`` greedy steps, computed WITHOUT a cache:
    every step reruns every layer on the whole sequence; layers <= attention_layer see every row,
    the later ones the rows ``keep_rule`` picks from layer ``attention_layer``'s eager attention
    (kept prompt rows + every generated token). Returns (logits per step, kept prompt rows)."""
    lm = language_model(b.model)
    config = lm.config
    saved, config._attn_implementation_internal = config._attn_implementation, "eager"
    weights = {}
    hook = lm.layers[attention_layer].self_attn.register_forward_hook(lambda m, a, out: weights.update(w=out[1]))
    try:
        seq = inp.embeds[None]
        if inp.positions is None:
            pos = torch.arange(seq.shape[1])[None]
        else:
            pos = inp.positions[:, None]                                          # [3, 1, S]
        logits, kept = [], None
        for _ in range(steps):
            n = seq.shape[1]
            h = seq
            causal = torch.full((n, n), float("-inf")).triu(1)[None, None]
            rope = lm.rotary_emb(h, pos)
            rows = torch.arange(n)
            for i, layer in enumerate(lm.layers):
                if i == attention_layer + 1:
                    if kept is None:
                        kept = keep_rule(weights["w"][0])                          # [H, S, S] -> prompt rows kept
                    rows = torch.cat([kept, torch.arange(inp.length, n)])
                    h, sub = h[:, rows], pos[..., rows]
                    causal = torch.full((len(rows), len(rows)), float("-inf")).triu(1)[None, None]
                    rope = lm.rotary_emb(h, sub)
                h = layer(h, attention_mask=causal, position_embeddings=rope)
            logits.append(b.model.get_output_embeddings()(lm.norm(h))[0, -1].float())
            token = logits[-1].argmax()
            seq = torch.cat([seq, b.model.get_input_embeddings()(token)[None, None]], dim=1)
            pos = torch.cat([pos, pos[..., -1:] + 1], dim=-1)
    finally:
        hook.remove()
        config._attn_implementation_internal = saved
    return logits, kept


@pytest.mark.parametrize("family", ["llava_next", "qwen2_5_vl"])
@pytest.mark.parametrize("stage", [FastVStage(layer=1, ratio=0.5), PruneVidLLMStage(layer=0, alpha=0.4)], ids=repr)
def test_a_stage_at_layer_k_gives_the_logits_of_an_independent_computation(tiny, family, stage):
    b, inputs, config = tiny[family]
    inp = inputs[1]
    start, end = inp.visual_span

    def keep_rule(weights):  # written from the papers' rules, on the eager attention [H, S, S]
        if isinstance(stage, FastVStage):
            scores = weights[:, -1, start:end].mean(0)
            visual = scores.topk(round((end - start) * (1 - stage.ratio))).indices.sort().values
        else:
            scores = weights[:, end:, start:end].amax(dim=(0, 1))
            visual = torch.cat([scores[s:s + n].topk(int(n * stage.alpha)).indices + s
                                for s, n in zip(torch.tensor((0,) + inp.blocks).cumsum(0).tolist(), inp.blocks)])
            visual = visual.sort().values
        return torch.cat([torch.arange(start), visual + start, torch.arange(end, inp.length)])

    # PruneVid also cuts the earlier layers' KV: later steps read kept rows whose early-layer states saw
    # every row, which no cache-free rerun reproduces, so only its prefill is recomputed here
    expected, kept = independent(b, inp, keep_rule, stage.attention_layer, steps=1 if stage.cut_earlier else 2)
    capture = FirstLogits()
    config = config.__class__.from_dict(config.to_dict())
    config.max_new_tokens = 2
    config.eos_token_id = None                                 # two steps, whatever the first token is
    InnerLoop(b, stage).generate_ids([inp], config, LogitsProcessorList([capture]))
    assert inp.counts.tokens == [inp.length] * stage.prune_layer + [len(kept)] * (2 - stage.prune_layer)
    assert len(capture.scores) == 2
    for ours, theirs in zip(capture.scores, expected):
        assert torch.allclose(ours[0], theirs, atol=1e-5, rtol=1e-5)


def test_cost_arithmetic_equals_torchs_flop_counter_and_the_cache_bytes(tiny):
    b, inputs, config = tiny["llava_next"]
    lm, shape = language_model(b.model), text_shape(b.model.config)
    config_ = lm.config
    saved, config_._attn_implementation_internal = config_._attn_implementation, "eager"  # matmuls the counter sees
    try:
        h = torch.randn(1, 37, shape.hidden)
        rope = lm.rotary_emb(h, torch.arange(37)[None])
        with FlopCounterMode(display=False) as counter:
            lm.layers[0](h, attention_mask=None, position_embeddings=rope)
        assert counter.get_total_flops() == layer_flops(shape, 37)
        with FlopCounterMode(display=False) as counter:
            b.model.get_output_embeddings()(h[:, -1:])
        assert prefill_flops(shape, [0, 0]) == counter.get_total_flops()
    finally:
        config_._attn_implementation_internal = saved
    config = config.__class__.from_dict(config.to_dict())
    config.eos_token_id = None                                  # all 6 new tokens
    loop = InnerLoop(b, FastVStage(layer=1))
    loop.generate_ids([inputs[0]], config)
    held = sum(layer.keys.numel() * layer.keys.element_size() * 2 for layer in loop.cache.layers)
    counts = inputs[0].counts
    length = inputs[0].length + 5                                 # the cache also holds 5 of the 6 new tokens
    decoded = 5 * len(counts.kv) * shape.kv_values_per_token * 4
    assert held == kv_cache_bytes(shape, counts.kv, torch.float32) + decoded and counts.kv[0] + 5 == length
    fields = record_cost(shape, [counts], torch.float32)
    assert fields["visual_tokens_per_layer"] == [[counts.visual[0], 1], [counts.visual[1], 1]]
    assert fields["prefill_tflops"] * 1e12 == pytest.approx(prefill_flops(shape, counts.tokens))


def test_videoqa_records_costs_and_fingerprints_the_stage(tiny, one_thread, monkeypatch):
    b = tiny["llava_next"][0]
    t = 4
    batch = {"ids": ["a"], "records": [{"id": "a", "task": "open_ended", "question": "what happens?"}],
             "pixel_values": [torch.randn(t, 3, *b.preprocessing.size, generator=torch.Generator().manual_seed(1))],
             "frame_indices": [list(range(t))], "status": ["ok"], "error": [""], "decode_ms": [0.0]}
    plain = VideoQA(b, reducer=ConcatReducer(num_frames=t), max_new_tokens=4)
    staged = VideoQA(b, reducer=ConcatReducer(num_frames=t), max_new_tokens=4, inner_stage=FastVStage(layer=1),
                     generation_loop="static_compiled")
    r0, r1 = plain.predict_step(batch)[0], staged.predict_step(batch)[0]
    assert r0["status"] == r1["status"] == "ok", (r0["error"], r1["error"])
    assert r0["inner_stage"] is None and r1["inner_stage"] == {"name": "fastv", "layer": 1, "ratio": 0.5}
    assert r1["prefill_tflops"] < r0["prefill_tflops"] and r1["kv_cache_mb"] < r0["kv_cache_mb"]
    v = r0["visual_tokens_out"]
    assert r0["visual_tokens_per_layer"] == [[v, 2]] and r1["visual_tokens_per_layer"] == [[v, 1], [v // 2, 1]]
    assert "inner_stage" not in plain.fingerprint()                 # runs without a stage keep their digest
    assert staged.fingerprint()["inner_stage"] == r1["inner_stage"]
    assert staged.resolved_generation_loop() == ("eager", "no CUDA device (cpu): compiled decoding needs CUDA graphs")
    monkeypatch.setattr("dyto.models.videoqa.resolve_generation_loop", lambda *a: ("static_compiled", None))
    assert staged.resolved_generation_loop() == ("eager", "the inner stage fastv decodes in dyto's own loop "
                                                          "(no static cache)")
    assert plain.resolved_generation_loop() == ("static_compiled", None)
    with pytest.raises(ConfigError, match="inner_stage.init_args.layer: 2 .*1..1 for this 2-layer"):
        VideoQA(b, reducer=ConcatReducer(num_frames=t), inner_stage=FastVStage(layer=2))
    with pytest.raises(ConfigError, match="ratio"):
        FastVStage(ratio=1.0)


def test_the_backbone_hook_sees_the_original_rows_the_stage_kept(tiny):
    b, inputs, config = tiny["internvl"]                           # visual rows interleaved with frame labels
    seen = []
    b.inner_hook = lambda inputs: (lambda layer, hidden, cols: seen.append((layer, cols.clone())) or hidden)
    try:
        InnerLoop(b, FastVStage(layer=1, ratio=0.75)).generate_ids(inputs, config)
    finally:
        del b.inner_hook
    (l0, before), (l1, after) = seen[:2]
    rows = inputs[0].visual_rows
    pad = before.shape[1] - inputs[0].length
    assert (l0, l1) == (0, 1) and before[0, pad:].tolist() == list(range(inputs[0].length))
    kept = after[0][after[0] >= 0] - pad
    dropped = set(range(inputs[0].length)) - set(kept.tolist())
    assert dropped <= set(rows.tolist()) and len(dropped) == len(rows) - round(len(rows) * 0.25)


def test_preflight_stops_a_stage_layer_the_checkpoint_does_not_have(tmp_path):
    import json

    from dyto.preflight import PreflightError, preflight

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"text_config": {"num_hidden_layers": 28}}))
    stage = {"class_path": "dyto.models.inner.HoliTomInnerStage", "init_args": {"layer": 18}}
    model = {"backbone": {"class_path": "dyto.models.LlavaOnevision", "init_args": {"checkpoint": str(folder)}},
             "inner_stage": stage}
    preflight({"model": model})                                                     # 18 of 28: fine
    stage["init_args"]["layer"] = 28
    with pytest.raises(PreflightError, match=r"inner_stage.init_args.layer: 28 .*1..27 for this 28-layer"):
        preflight({"model": model})
    with pytest.raises(PreflightError, match="2-layer"):                           # the tiny models
        preflight({"model": {"backbone": "internvl", "inner_stage": stage}})
