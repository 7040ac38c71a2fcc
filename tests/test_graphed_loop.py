"""``generation_loop: graphed`` (dyto/models/graphed_loop.py) on the CPU, tiny RANDOM-WEIGHT models:

* the token ids are bitwise Hugging Face ``generate``'s on every backbone, alone and left-padded in a
  batch, with EOS stopping one row early (EOS set to a token the row really produces), with
  ``min_new_tokens`` holding EOS back, and for every ``sync_every``;
* the compiled step reads the grouped KV heads as cached, where transformers' compiled step repeats
  them per query head (and VideoQA's static_compiled now does the same);
* the step traces with ``fullgraph=True`` as one graph that later groups of the same shape reuse
  (no recompilation), inductor's generated kernels give the same tokens, and a step the compiler
  refuses runs uncompiled with a note;
* a group shape keeps its static cache and buffers (what a CUDA graph replays on) until the shape or
  the weights' addresses change;
* the host waits for the device a fixed number of times per call, not once per token;
* past the dynamic-RoPE limit the transformers update still runs (the answers are generate's);
* ``VideoQA`` runs it through ``trainer.predict``, fingerprints it, and falls back to ``generate``
  for a setting it does not implement, saying so once.

The CUDA-graph capture itself needs a GPU: benchmarks/gpu_check.sh measures it (docs/throughput.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch.profiler import ProfilerActivity, profile

from dyto.datamodules import VideoQADataModule
from dyto.models import VideoQA
from dyto.models.backbone import build_backbone, list_backbones
from dyto.models.generation_loop import static_compiled_config
from dyto.models.graphed_loop import GraphedLoop
from dyto.models.inner import language_model
from dyto.models.llava_next import LlavaNext
from dyto.models.tiny import build_tiny_llava_next
from dyto.reduction import ConcatReducer, DyToReducer

DEMO = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo"
QUESTIONS = ["what is happening in the video?", "what happens after the cut, and who is seen riding there?"]
SYNCS = ("aten::_local_scalar_dense", "aten::is_nonzero", "aten::nonzero")


def inputs_for(name: str, new_tokens: int = 12):
    b = build_backbone(name)
    t = 4 * b.preprocessing.frames_per_patch
    encoded = b.encode(torch.randn(t, 3, *b.preprocessing.size, generator=torch.Generator().manual_seed(1)))
    reduction = ConcatReducer(num_frames=t)(encoded.features, b.grid).reduce_extras(encoded.extras)
    inputs = [b.build_input(b.prompt("open_ended", q), reduction) for q in QUESTIONS]
    config = b.generation_defaults()
    config.update(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=0)
    return b, inputs, config


def generate_ids(b, inputs, config) -> torch.Tensor:
    """Hugging Face's own ``generate`` on the inputs ``Backbone.generate`` hands it, as token ids
    (the Qwen backbones hand the model's own inputs: DeepStack features included on Qwen3-VL)."""
    if hasattr(b, "generate_ids"):
        return b.generate_ids(inputs, config)
    embeds, mask, ids = b.llm_batch(inputs)
    kwargs = {} if ids is None else {"position_ids": ids}
    b.before_generation()
    return b.model.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config, **kwargs)


@pytest.fixture(scope="module")
def tiny(one_thread):
    return {name: inputs_for(name) for name in list_backbones()}


@pytest.mark.parametrize("name", list_backbones())
def test_token_ids_are_generates_bitwise_with_eos_and_min_new_tokens(tiny, name):
    b, inputs, config = tiny[name]
    free = generate_ids(b, inputs, config)                              # [2, 12]: no EOS in 12 tokens
    assert free.shape == (2, 12)
    # EOS = the 5th token of row 0, which row 1 does not produce before: row 0 stops, row 1 goes on
    eos = next(int(t) for t in free[0, 4:] if int(t) not in free[1, :4].tolist())
    stop = config.__class__.from_dict({**config.to_dict(), "eos_token_id": eos, "pad_token_id": 0})
    held = config.__class__.from_dict({**stop.to_dict(), "min_new_tokens": 8})
    cases = [(config, inputs), (stop, inputs), (stop, inputs[:1]), (held, inputs)]
    expected = [generate_ids(b, group, c) for c, group in cases]
    assert expected[2].shape[1] < 12 and expected[1].shape[1] > expected[2].shape[1]  # EOS ended row 0 alone
    assert not torch.equal(expected[3][:, : expected[1].shape[1]], expected[1])     # min_new_tokens changed it
    cases, expected = cases + cases[1:2] * 2, expected + expected[1:2] * 2  # a shape again: its cache reused
    for sync_every in (1, 3, 8):
        loop = GraphedLoop(b, sync_every=sync_every)
        for (c, group), want in zip(cases, expected):
            assert torch.equal(loop.generate_ids(group, c), want), (sync_every, c.eos_token_id, len(group))


@pytest.mark.parametrize("name", ["llava_next", "qwen2_5_vl", "qwen3_vl"])
def test_the_step_traces_as_one_graph_that_later_groups_reuse(tiny, name):
    """fullgraph=True: any data-dependent branch (a host sync) in the step would fail the trace."""
    b, inputs, config = tiny[name]
    torch._dynamo.reset()
    GraphedLoop._compiled.clear()
    graphs: list[int] = []

    def counting_backend(gm, example_inputs):
        graphs.append(len(gm.graph.nodes))
        return gm.forward

    want = generate_ids(b, inputs, config)
    for _ in range(2):  # a new loop, cache and buffers each time: the same graph
        assert torch.equal(GraphedLoop(b, compile=counting_backend).generate_ids(inputs, config), want)
    assert len(graphs) == 1 and graphs[0] > 100
    assert torch.equal(GraphedLoop(b, compile=counting_backend).generate_ids(inputs[:1], config),
                       generate_ids(b, inputs[:1], config))
    assert len(graphs) == 2  # a new group size: one more graph


@pytest.mark.parametrize("name", ["qwen2_5_vl", "llava_next"])
def test_the_compiled_step_reads_the_cache_without_repeating_it_per_head(tiny, name):
    """Every tiny text model has 2 KV heads for 4 query heads. transformers' compiled decoding step
    repeats the keys per query head over the whole static cache; the graphed step's SDPA reads them
    as cached ([B, KV heads, L, hd]), and so does static_compiled's as VideoQA runs it."""
    b, inputs, config = tiny[name]
    lm = language_model(b.model)
    key_heads: list[int] = []

    def backend(gm, example_inputs):
        key_heads.extend(node.args[1].meta["example_value"].shape[1] for node in gm.graph.nodes
                         if node.op == "call_function" and "scaled_dot_product_attention" in str(node.target))
        return gm.forward

    torch._dynamo.reset()
    GraphedLoop._compiled.clear()
    assert torch.equal(GraphedLoop(b, compile=backend).generate_ids(inputs, config), generate_ids(b, inputs, config))
    assert key_heads == [lm.config.num_key_value_heads] * len(lm.layers) and 2 * key_heads[0] == lm.config.num_attention_heads
    key_heads.clear()
    torch._dynamo.reset()
    static = static_compiled_config(config, max(i.length for i in inputs), backend=backend, mode=None, any_device=True)
    generate_ids(b, inputs, static)
    assert key_heads and set(key_heads) == {lm.config.num_attention_heads}
    key_heads.clear()   # VideoQA runs static_compiled's generate with the packed attention, the same answers
    torch._dynamo.reset()
    module = VideoQA(b, reducer=ConcatReducer(num_frames=4), max_new_tokens=12)
    assert module._static_compiled_generate(inputs, static, None) == b.generate(inputs, config)
    assert key_heads and set(key_heads) == {lm.config.num_key_value_heads}


def test_a_group_shape_keeps_its_cache_until_the_shape_or_the_weights_change(one_thread):
    """A CUDA graph replays on fixed addresses: the same shape reuses the slot (cache, buffers, graph),
    another shape replaces it, and so does a model whose parameters moved (a dtype round trip)."""
    b, inputs, config = inputs_for("qwen2_5_vl", new_tokens=6)
    loop = GraphedLoop(b)
    loop.generate_ids(inputs, config)
    slot = loop._slot
    loop.generate_ids(inputs, config)
    assert loop._slot is slot
    loop.generate_ids(inputs[:1], config)
    assert loop._slot is not slot
    slot = loop._slot
    b.model.to(torch.float64).to(torch.float32)
    assert torch.equal(loop.generate_ids(inputs[:1], config), generate_ids(b, inputs[:1], config))
    assert loop._slot is not slot


def test_a_step_the_compiler_refuses_runs_uncompiled_with_a_note(tiny):
    b, inputs, config = tiny["qwen2_5_vl"]
    torch._dynamo.reset()

    def refusing_backend(gm, example_inputs):
        raise RuntimeError("no kernels today")

    loop = GraphedLoop(b, compile=refusing_backend)
    assert torch.equal(loop.generate_ids(inputs, config), generate_ids(b, inputs, config))
    assert len(loop.notes) == 1 and "no kernels today" in loop.notes[0] and "run uncompiled" in loop.notes[0]


def test_inductor_kernels_give_the_same_tokens(one_thread):
    """What runs on a GPU before the capture: the step through inductor (C++ kernels on the CPU)."""
    b, inputs, config = inputs_for("qwen2_5_vl", new_tokens=6)
    torch._dynamo.reset()
    GraphedLoop._compiled.clear()
    assert torch.equal(GraphedLoop(b, compile="inductor").generate_ids(inputs, config),
                       generate_ids(b, inputs, config))


def test_the_host_waits_for_the_device_per_call_not_per_token(tiny):
    """Hugging Face's loop reads the device once per token (its stopping check); this loop every
    ``sync_every`` steps: with sync_every above the length, 4 tokens and 12 cost the same syncs."""
    b, inputs, config = tiny["qwen2_5_vl"]

    def syncs(n: int, loop: str) -> int:
        c = config.__class__.from_dict({**config.to_dict(), "max_new_tokens": n})
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            if loop == "graphed":
                GraphedLoop(b, sync_every=64).generate_ids(inputs, c)
            else:
                generate_ids(b, inputs, c)
        return sum(e.name in SYNCS for e in prof.events())

    assert syncs(4, "graphed") == syncs(12, "graphed") <= 2
    assert syncs(12, "generate") - syncs(4, "generate") >= 8


def test_past_the_dynamic_rope_limit_the_update_still_runs(one_thread):
    """Tiny LLaVA-NeXT with dynamic NTK RoPE past 160 positions: a 197-token question's answer needs
    transformers' update at every step (generate's answer differs from plain RoPE's)."""
    model, tokenizer = build_tiny_llava_next(max_position_embeddings=160, rope_scaling_factor=2.0)
    b = LlavaNext.from_parts(model, tokenizer, "tiny (160 positions)")
    features = b.encode(torch.randn(4, 3, *b.preprocessing.size, generator=torch.Generator().manual_seed(1))).features
    long = b.build_input(b.prompt("open_ended", "what happens after the cut, and who rides there at the end?"),
                         ConcatReducer(num_frames=4)(features, b.grid))
    short = b.build_input(b.prompt("open_ended", "what?"), ConcatReducer(num_frames=1)(features[:1], b.grid))
    config = b.generation_defaults()
    config.update(do_sample=False, max_new_tokens=6, min_new_tokens=6)
    assert long.length > 160 > short.length + 6
    for group in ([long], [short]):
        loop = GraphedLoop(b, compile="eager")
        assert torch.equal(loop.generate_ids(group, config), generate_ids(b, group, config))
        assert loop.notes == (["a sequence can pass the dynamic-RoPE limit; its steps run without compiler and graph"]
                              if group[0] is long else [])


def test_videoqa_predicts_with_it_and_falls_back_for_sampling(one_thread, capsys):
    """The demo questions through trainer.predict, in pools of 3: the records of eager decoding."""
    runs = {}
    for loop in ("eager", "graphed"):
        module = VideoQA("llava_next", reducer=DyToReducer(budget=48, num_frames=16), max_new_tokens=5,
                         generation_batch_size=2, generation_loop=loop)
        dm = VideoQADataModule(str(DEMO / "questions.jsonl"), video_root=str(DEMO), batch_size=3, num_workers=0)
        trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                          enable_checkpointing=False, enable_model_summary=False)
        runs[loop] = [r for batch in trainer.predict(module, datamodule=dm) for r in batch]
        assert module.fingerprint()["generation_loop"] == loop
        assert module.fingerprint().get("decode_attention") == ("packed_gqa" if loop == "graphed" else None)
    assert [(r["id"], r["prediction"], r["prediction2"]) for r in runs["graphed"]] == \
        [(r["id"], r["prediction"], r["prediction2"]) for r in runs["eager"]]
    assert all(r["status"] == "ok" for r in runs["graphed"]) and len({r["prediction"] for r in runs["eager"]}) > 1
    module.generation_config.update(do_sample=True, top_k=1)     # greedy in effect, but not what graphed does
    b = module.backbone
    encoded = b.encode(torch.randn(4, 3, *b.preprocessing.size, generator=torch.Generator().manual_seed(0)))
    inp = b.build_input(b.prompt("open_ended", "what?"), ConcatReducer(num_frames=4)(encoded.features, b.grid))
    capsys.readouterr()
    first = [text for text, _, _ in module.generate([inp])]
    assert [text for text, _, _ in module.generate([inp])] == first
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "graphed" in ln]
    assert lines == ["generation_loop: graphed unavailable, decoding with generate: it decodes greedily only "
                     "(do_sample=False, num_beams=1)"]
