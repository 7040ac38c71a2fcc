"""Throughput options (docs/throughput.md) on the CPU with the tiny RANDOM-WEIGHT models and the
real demo clips: length-aware generation groups (less padding, same answers, records in input
order), KV-cache sizing, the ``generation_loop`` fallback and its fingerprint, the static cache
traced by TorchDynamo giving the eager answers, and the DataModule's ``auto`` workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch._dynamo.utils import counters
from transformers import LlavaNextConfig

from dyto.datamodules import VideoQADataModule
from dyto.datamodules.base import (RankShardSampler, auto_num_workers, auto_prefetch_factor, length_order,
                                   question_length)
from dyto.models import VideoQA
from dyto.models.backbone import LLMInput, build_backbone, left_pad, list_backbones
from dyto.models.batching import (alone_past_limit, kv_cache_bytes_per_token, length_groups, memory_groups,
                                  padding_tokens)
from dyto.models.generation_loop import (STATIC_CACHE_BUCKET, CompileLog, resolve_generation_loop,
                                        static_compiled_config)
from dyto.models.llava_next import LlavaNext
from dyto.models.rope import dynamic_rope_limit, reset_dynamic_rope, rope_fixed_under_limit
from dyto.models.tiny import build_tiny_llava_next
from dyto.records import QARecord, write_jsonl
from dyto.reduction import ConcatReducer, DyToReducer

DEMO = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo"
QUESTIONS = ["what?", "what happens after the cut, and who is seen riding there in the end?", "who?",
             "why does the light change near the end of the clip, and what does it show?", "where?",
             "what colour are the bikes?", "is it raining, and how can one tell from the road?", "how many?"]


@pytest.fixture(scope="module")
def llava(one_thread):
    b = build_backbone("llava_next")
    pixels = torch.randn(4, 3, *b.preprocessing.size, generator=torch.Generator().manual_seed(0))
    reduction = ConcatReducer(num_frames=4)(b.encode(pixels).features, b.grid)
    return b, [b.build_input(b.prompt("open_ended", q), reduction) for q in QUESTIONS]


def counted_padding(backbone, inputs, groups) -> int:
    """Pad rows as left_pad actually builds them (mask zeros), group by group."""
    pad = backbone.input_embeddings().weight[0]
    return sum(int((left_pad([inputs[i].embeds for i in g], pad)[1] == 0).sum()) for g in groups)


def test_length_aware_groups_pad_less_and_keep_every_index(llava):
    b, inputs = llava
    lengths = [i.length for i in inputs]
    by_length, by_input = length_groups(lengths, 2), length_groups(lengths, 2, order="input")
    for groups in (by_length, by_input):
        assert sorted(i for g in groups for i in g) == list(range(len(inputs)))
        assert all(len(g) <= 2 and g == sorted(g) for g in groups)
    assert by_input == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert padding_tokens(lengths, by_length) == counted_padding(b, inputs, by_length)
    assert padding_tokens(lengths, by_input) == counted_padding(b, inputs, by_input)
    assert counted_padding(b, inputs, by_length) < counted_padding(b, inputs, by_input) / 3
    assert length_groups(lengths, None) == [list(range(len(inputs)))]  # one group: the old single call
    with pytest.raises(ValueError, match="batch_order"):
        length_groups(lengths, 2, order="random")


def test_kv_cache_bytes_from_the_text_config():
    # LLaVA-NeXT-7B (Vicuna-7B: 32 layers, 32 KV heads of 128) in fp16: 2*32*32*128*2 bytes = 0.5 MiB a token
    seven_b = LlavaNextConfig(text_config={"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
                                           "num_attention_heads": 32, "num_key_value_heads": 32})
    assert kv_cache_bytes_per_token(seven_b, torch.float16) == 2**19
    # grouped-query attention (Yi-34B: 60 layers, 8 KV heads of 128)
    yi = LlavaNextConfig(text_config={"model_type": "llama", "hidden_size": 7168, "num_hidden_layers": 60,
                                      "num_attention_heads": 56, "num_key_value_heads": 8})
    assert kv_cache_bytes_per_token(yi, torch.bfloat16) == 2 * 60 * 8 * 128 * 2


def test_memory_groups_fit_the_budget(llava):
    b, inputs = llava
    lengths = [i.length for i in inputs]
    per_token = kv_cache_bytes_per_token(b.model.config, b.dtype)
    budget = 3 * (max(lengths) + 8) * per_token  # room for three of the longest
    groups = memory_groups(lengths, 8, per_token, budget)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(len(g) * (max(lengths[i] for i in g) + 8) * per_token <= budget for g in groups)
    assert max(len(g) for g in groups) == 3
    assert memory_groups(lengths, 8, per_token, 1.0) == [[i] for i in sorted(range(8), key=lengths.__getitem__)]
    assert all(len(g) <= 2 for g in memory_groups(lengths, 8, per_token, 1e12, cap=2))
    in_order = memory_groups(lengths, 8, per_token, budget, order="input")
    assert [i for g in in_order for i in g] == list(range(len(lengths)))  # consecutive runs of the batch
    assert all(len(g) * (max(lengths[i] for i in g) + 8) * per_token <= budget for g in in_order)


def test_static_compiled_falls_back_on_cpu_once_and_records_what_ran(llava, capsys):
    b, inputs = llava
    assert resolve_generation_loop("static_compiled", b.model, torch.device("cpu"))[0] == "eager"
    with pytest.raises(ValueError, match="generation_loop"):
        VideoQA(b, reducer=ConcatReducer(num_frames=4), generation_loop="graphs")
    eager = VideoQA(b, reducer=ConcatReducer(num_frames=4), max_new_tokens=5)
    asked = VideoQA(b, reducer=ConcatReducer(num_frames=4), max_new_tokens=5, generation_loop="static_compiled")
    assert asked.resolved_generation_loop()[1].startswith("no CUDA device")
    assert asked.fingerprint()["generation_loop"] == "eager" == eager.fingerprint()["generation_loop"]
    first, again = asked.generate(inputs[:3]), asked.generate(inputs[3:5])
    lines = [line for line in capsys.readouterr().out.splitlines() if "generation_loop" in line]
    assert lines == ["generation_loop: static_compiled unavailable, decoding eagerly: no CUDA device (cpu): "
                     "compiled decoding needs CUDA graphs"]
    assert [a[0] for a in first + again] == [a[0] for a in eager.generate(inputs[:5])]


def compile_inputs(name: str):
    b = build_backbone(name)
    pixels = torch.randn(4, 3, *b.preprocessing.size, generator=torch.Generator().manual_seed(1))
    encoded = b.encode(pixels)
    reduction = ConcatReducer(num_frames=4)(encoded.features, b.grid).reduce_extras(encoded.extras)
    inputs = [b.build_input(b.prompt("open_ended", q), reduction) for q in QUESTIONS[:2]]
    config = b.generation_defaults()
    config.update(do_sample=False, max_new_tokens=6, min_new_tokens=6)
    return b, inputs, config


@pytest.mark.parametrize("name", list_backbones())
def test_static_cache_traced_by_dynamo_gives_the_eager_answers(name, one_thread):
    """What static_compiled runs on a GPU, on the CPU: a static cache and the decoding step through
    torch.compile, for every backbone (Qwen2.5-VL with its explicit M-RoPE positions), batched
    with left padding. A counting backend proves the step was traced (transformers silently
    decodes eagerly when it decides it cannot compile) and runs the traced graphs as they are."""
    torch._dynamo.reset()
    graphs: list[int] = []

    def counting_backend(gm, example_inputs):
        graphs.append(len(gm.graph.nodes))
        return gm.forward

    b, inputs, config = compile_inputs(name)
    static = static_compiled_config(config, max(i.length for i in inputs), backend=counting_backend, mode=None,
                                    any_device=True)
    assert static.cache_implementation == "static" and static.max_cache_len == STATIC_CACHE_BUCKET
    assert b.generate(inputs, static) == b.generate(inputs, config) == [b.generate([i], config)[0] for i in inputs]
    assert graphs and max(graphs) > 100  # the decoder layers were traced, not just a wrapper


def test_inductor_kernels_give_the_eager_answers(one_thread):
    """The configuration runs use (inductor, mode="reduce-overhead"), with generated kernels:
    C++ on the CPU, where CUDA graphs do not apply; on a GPU the same graphs are Triton kernels
    replayed as CUDA graphs. Tiny Qwen2.5-VL (one graph per decoding step), about 15 s of compiling."""
    torch._dynamo.reset()
    counters.clear()
    b, inputs, config = compile_inputs("qwen2_5_vl")
    static = static_compiled_config(config, max(i.length for i in inputs), any_device=True)
    assert (static.compile_config.backend, static.compile_config.mode) == ("inductor", "reduce-overhead")
    assert b.generate(inputs, static) == b.generate(inputs, config)
    assert counters["stats"]["unique_graphs"] >= 1 and counters["inductor"]  # compiled, not decoded eagerly


def test_a_pool_answers_as_one_question_at_a_time_through_trainer_predict(one_thread):
    """The demo questions in pools of 3 (length-ordered shard, length-aware groups of 2) against
    batches of 1 in input order: the same records, predicted shortest question first."""
    runs, fingerprints = {}, {}
    for batch_size, group in ((3, 2), (1, 1)):
        module = VideoQA("llava_next", reducer=DyToReducer(budget=48, num_frames=16), max_new_tokens=4,
                         generation_batch_size=group)
        dm = VideoQADataModule(str(DEMO / "questions.jsonl"), video_root=str(DEMO), batch_size=batch_size,
                               num_workers=0)
        trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                          enable_checkpointing=False, enable_model_summary=False)
        runs[batch_size] = [r for batch in trainer.predict(module, datamodule=dm) for r in batch]
        fingerprints[batch_size] = dm.fingerprint()
    pooled, single = runs[3], runs[1]
    assert {k: v["order"] for k, v in fingerprints.items()} == {3: "length", 1: "input"}
    assert [r["id"] for r in single] == dm.input_ids() and len(pooled) == 5
    by_length = [dm.records[i].id for i in length_order(dm.records)]
    assert [r["id"] for r in pooled] == by_length != dm.input_ids()  # the demo's order is not by length
    assert all(r["status"] == "ok" for r in pooled)
    answers = {r["id"]: (r["prediction"], r["prediction2"]) for r in pooled}
    assert answers == {r["id"]: (r["prediction"], r["prediction2"]) for r in single}
    assert len({r["prediction"] for r in single}) > 1


def record(i: int, question: str, options: list[str] | None = None, question2: str | None = None) -> QARecord:
    return QARecord(id=f"q{i}", benchmark="demo", task="multiple_choice" if options else "open_ended",
                    video="v.mp4", question=question, answer="a", options=options,
                    answer_index=0 if options else None, question2=question2)


def test_length_order_deals_sorted_shards_to_the_ranks():
    recs = [record(i, "x" * n) for i, n in enumerate([30, 5, 20, 5, 1, 40, 12])]
    order = length_order(recs)
    assert order == [4, 1, 3, 6, 2, 0, 5]  # the two of length 5 keep their input order
    shards = [list(RankShardSampler(recs, 2, rank, order)) for rank in range(2)]
    assert shards == [[4, 3, 2, 5], [1, 6, 0]]  # round-robin: both sorted, lengths spread alike
    assert [list(RankShardSampler(recs, 3, r)) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]  # input order
    assert list(RankShardSampler(recs[:1], 2, 1, [0])) == []  # a rank may get nothing
    with pytest.raises(ValueError, match="permutation"):
        RankShardSampler(recs, 1, 0, [0, 0, 1, 2, 3, 4, 5])
    assert question_length(record(0, "why?", options=["red", "blue"])) == 4 + 3 + 4
    assert question_length(record(0, "why?", question2="and how?")) == 4 + 8


def test_data_order_auto_sorts_pools_only(tmp_path):
    recs = [record(i, "x" * n) for i, n in enumerate([9, 3, 7, 1])]
    path = tmp_path / "q.jsonl"
    write_jsonl(path, [r.to_dict() for r in recs])

    def batches(**kw):
        dm = VideoQADataModule(str(path), num_workers=0, num_frames=4, **kw)
        return dm.resolved_order(), [b["ids"] for b in dm.predict_dataloader()]

    assert batches(batch_size=2) == ("length", [["q3", "q1"], ["q2", "q0"]])
    assert batches(batch_size=2, order="input") == ("input", [["q0", "q1"], ["q2", "q3"]])
    assert batches(batch_size=1) == ("input", [["q0"], ["q1"], ["q2"], ["q3"]])
    assert batches(batch_size=1, order="length") == ("length", [["q3"], ["q1"], ["q2"], ["q0"]])
    with pytest.raises(ValueError, match="order: 'shortest' is not allowed"):
        VideoQADataModule(str(path), order="shortest")


def test_auto_workers_and_prefetch(tmp_path):
    assert auto_num_workers(16, 1) == 15 and auto_num_workers(16, 8) == 1 and auto_num_workers(64, 1) == 16
    assert auto_num_workers(1, 1) == 0 and auto_num_workers(2, 4) == 0
    assert auto_prefetch_factor(1) == 2 and auto_prefetch_factor(16) == 1
    dm = VideoQADataModule(str(DEMO / "questions.jsonl"), video_root=str(DEMO), batch_size=16)
    assert (dm.num_workers, dm.prefetch_factor) == ("auto", "auto")
    workers, prefetch = dm.loader_workers()
    assert workers == auto_num_workers(len(__import__("os").sched_getaffinity(0)), 1) and prefetch == 1
    explicit = VideoQADataModule(str(DEMO / "questions.jsonl"), video_root=str(DEMO), num_workers=3, prefetch_factor=4)
    assert explicit.loader_workers() == (3, 4)
    loader = VideoQADataModule(str(DEMO / "questions.jsonl"), video_root=str(DEMO), num_workers=0,
                               num_frames=4).predict_dataloader()
    assert loader.num_workers == 0 and loader.prefetch_factor is None
    for bad in (dict(num_workers=-1), dict(num_workers="many"), dict(prefetch_factor=0), dict(batch_size=0)):
        with pytest.raises(ValueError, match=f"{next(iter(bad))}: .* is not allowed"):
            VideoQADataModule(str(DEMO / "questions.jsonl"), **bad)


def test_gpu_configs_pool_16_questions_on_the_fast_path_and_cpu_keeps_1(capsys):
    import yaml

    from dyto.cli import main

    configs = Path(__file__).resolve().parents[1] / "configs"
    for trainer, size in (("gpu", 16), ("ddp", 16), ("cpu", 1)):
        with pytest.raises(SystemExit):
            main(["predict", "--config", str(configs / "trainer" / f"{trainer}.yaml"), "--config",
                  str(configs / "models" / "llava_next_7b.yaml"), "--config", str(configs / "benchmarks" / "nextqa.yaml"),
                  "--print_config"])
        cfg = yaml.safe_load(capsys.readouterr().out)
        assert cfg["data"]["init_args"]["batch_size"] == size, trainer
        assert cfg["data"]["init_args"]["num_workers"] == "auto"
        assert cfg["model"]["generation_batch_size"] == "auto"
        fast = (cfg["model"]["generation_loop"], cfg["model"]["encode_batch"])
        assert fast == (("static_compiled", "pool") if trainer != "cpu" else ("eager", "question")), trainer
        assert cfg["data"]["init_args"]["order"] == "auto"  # length-ordered pools where batch_size > 1


def test_bench_throughput_runs_and_reports_identical_answers(tmp_path):
    """The benchmark's CPU path end to end on the tiny Qwen2.5-VL (2 questions; today's path with the
    model's own vision tower, the new one batched, pooled and decoded in the graphed loop): ratio,
    identical answers, padding, the per-stage account with the reducer's ms per question, the bound,
    the step profile and the reduce stage profiled in situ."""
    import json
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(repo / "benchmarks" / "bench_throughput.py"), "--threads", "1",
                          "--backbone", "qwen2_5_vl", "--questions", "2", "--pool", "2", "--max-new-tokens", "3",
                          "--token-questions", "1", "--profile", "--json", str(tmp_path / "t.jsonl")],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(repo)},
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "identical greedy answers: 2/2" in out.stdout and "vision_tower batched" in out.stdout
    assert "ms per token at batch 1, static_compiled: runs as eager here (no CUDA device (cpu)" in out.stdout
    assert "against the stage bounds' sum" in out.stdout and "profile of one decoding step" in out.stdout
    assert "    per question: first " in out.stdout and "warm-up pool: first " in out.stdout
    assert "reduce stage in situ (2 reducer calls of one pool" in out.stdout and "top operators a call:" in out.stdout
    row = json.loads((tmp_path / "t.jsonl").read_text())
    assert row["identical"] == 2 and row["generation_loop"] == "graphed" and row["ratio"] > 0
    assert sorted(row["ms_per_token"]) == ["eager", "graphed"]  # static_compiled ran eagerly: one row
    assert row["bound_ms"] > 0 and row["worker_qps"] > 0 and row["weight_bytes"] > 0
    assert all(row["stages"][k]["work"] > 0 for k in ("vision encoder", "reducer", "prefill", "decoding"))
    reduce_ms = row["stages"]["reducer"]["per_question_ms"]
    assert len(reduce_ms["all"]) == 2 and reduce_ms["min"] <= reduce_ms["median"] <= reduce_ms["max"]
    assert reduce_ms["first"] == reduce_ms["all"][0] and len(row["stages"]["reducer"]["warmup_per_question_ms"]["all"]) == 2


@pytest.mark.parametrize("mean_std", ["clip", "half"])
def test_table_normalisation_is_bitwise_the_elementwise_arithmetic(mean_std):
    """preprocess_frames looks normalised values up in a [3, 256] table; on a real clip's frames
    it equals the element-wise float64 rescale -> float32 -> normalise it replaced, bit for bit."""
    import numpy as np
    from PIL import Image

    from dyto.datamodules.video import CLIP_MEAN, CLIP_STD, decode_video, preprocess_frames

    mean, std = (CLIP_MEAN, CLIP_STD) if mean_std == "clip" else ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    frames = decode_video(str(DEMO / "bikes.mp4"), 12).frames
    resized = np.stack([np.asarray(Image.fromarray(f).convert("RGB").resize((112, 112), Image.BICUBIC)) for f in frames])
    x = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    elementwise = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    assert torch.equal(preprocess_frames(frames, 112, mean, std), elementwise)
    assert len(np.unique(resized)) > 200  # the clip exercises most of the table


@pytest.fixture(scope="module")
def rope160(one_thread):
    """Tiny LLaVA-NeXT with dynamic NTK RoPE (factor 2) past 160 positions, and four inputs: two
    that stay under the limit with 6 new tokens (121, 141 tokens), two that pass it (197, 169)."""
    model, tokenizer = build_tiny_llava_next(max_position_embeddings=160, rope_scaling_factor=2.0)
    b = LlavaNext.from_parts(model, tokenizer, "tiny (160 positions)")
    features = b.encode(torch.randn(4, 3, *b.preprocessing.size, generator=torch.Generator().manual_seed(1))).features
    asked = [("what?", 1), ("who is there?", 2), ("what happens after the cut, and who rides there at the end?", 4),
             ("who?", 4)]
    inputs = [b.build_input(b.prompt("open_ended", q), ConcatReducer(num_frames=n)(features[:n], b.grid)) for q, n in asked]
    assert [i.length for i in inputs] == [121, 141, 197, 169]
    config = b.generation_defaults()
    config.update(do_sample=False, max_new_tokens=6, min_new_tokens=6)
    return b, inputs, config


def test_dynamic_rope_state_is_reset_before_every_question(rope160):
    """transformers keeps the dynamic RoPE frequencies of the longest sequence seen: with
    ``rope_state: carried`` the 169-token question is answered differently after the 197-token
    one than first; ``per_question`` (default) answers it as first, whatever came before."""
    b, inputs, config = rope160
    assert dynamic_rope_limit(b.model) == 160 and dynamic_rope_limit(build_backbone("qwen2_5_vl").model) is None
    assert b.rope_state == "per_question" and b.fingerprint()["rope_state"] == "per_question"
    first = b.generate([inputs[3]], config)
    b.generate([inputs[2]], config)
    assert b.generate([inputs[3]], config) == first
    b.rope_state = "carried"
    try:
        reset_dynamic_rope(b.model)
        assert b.generate([inputs[3]], config) == first  # fresh state: the same
        b.generate([inputs[2]], config)
        assert b.generate([inputs[3]], config) != first  # the 197-token question's frequencies leak in
    finally:
        b.rope_state = "per_question"
    with pytest.raises(ValueError, match="rope_state"):
        LlavaNext.from_parts(b.model, b.tokenizer, "x", rope_state="sometimes")


def test_sequences_past_the_dynamic_rope_limit_are_generated_alone(rope160):
    """In a batch, dynamic RoPE rescales every row by the longest: batching a 121-token question
    with a 197-token one changes its answer. VideoQA generates the two that pass the limit alone
    and batches the others, so a pool answers exactly as one question at a time."""
    b, inputs, config = rope160
    alone = [b.generate([i], config)[0] for i in inputs]
    assert b.generate([inputs[0], inputs[2]], config) != [alone[0], alone[2]]  # what the grouping avoids
    assert b.generate(inputs[:2], config) == alone[:2]  # under the limit: batching is exact
    assert alone_past_limit([i.length for i in inputs], 6, 160) == ([0, 1], [2, 3])
    assert alone_past_limit([500, 10], 6, None) == ([0, 1], [])
    module = VideoQA(b, reducer=ConcatReducer(num_frames=4), max_new_tokens=6, generation_batch_size=None)
    module.generation_config.update(min_new_tokens=6)
    assert module.generation_groups(inputs) == [[0, 1], [2], [3]]
    assert [text for text, _, _ in module.generate(inputs)] == [a.strip() for a in alone]


def test_dynamic_rope_fixed_under_the_limit_is_one_graph_with_the_same_answers(rope160):
    """Under the limit transformers' dynamic-RoPE update can only reset the frequencies; with them
    decided before the call the compiled decoding step traces as ONE graph (six with the update's
    branch on max(position_ids)) and answers as before, batched and alone. Past the limit, and in
    ``carried`` mode after a longer question, the answers are transformers' own."""
    b, inputs, config = rope160
    torch._dynamo.reset()
    graphs: list[int] = []

    def counting_backend(gm, example_inputs):
        graphs.append(len(gm.graph.nodes))
        return gm.forward

    alone = [b.generate([i], config)[0] for i in inputs]
    static = static_compiled_config(config, inputs[1].length, backend=counting_backend, mode=None, any_device=True)
    rotary = [m for m in b.model.modules() if getattr(m, "rope_type", None) == "dynamic"]
    with rope_fixed_under_limit(b.model, inputs[1].length + 6) as fixed:
        assert fixed and all("forward" in m.__dict__ for m in rotary)
        assert b.generate(inputs[:2], static) == alone[:2]
    assert len(graphs) == 1 and graphs[0] > 100
    assert rotary and not any("forward" in m.__dict__ for m in rotary)  # the decorated forward is back
    with rope_fixed_under_limit(b.model, inputs[2].length + 6) as fixed:
        assert not fixed and b.generate([inputs[2]], config) == alone[2:3]
    b.rope_state = "carried"
    try:
        b.generate([inputs[2]], config)                        # leaves the frequencies of ~203 positions
        with rope_fixed_under_limit(b.model, inputs[0].length + 6):
            assert b.generate([inputs[0]], config) == alone[:1]  # what transformers' own reset gives
    finally:
        b.rope_state = "per_question"


def test_compilation_is_reported_once_per_shape_and_process(capsys):
    """static_compiled prints one line the first time a (group size, static cache length) runs in the
    process, with that group's time; later pools of the shape print nothing."""
    module = VideoQA("qwen2_5_vl", reducer=ConcatReducer(num_frames=2), max_new_tokens=4)
    seqs = [LLMInput(torch.zeros(n, 4), None, 0) for n in (100, 300, 2000)]
    out = [("a", 100.0, 900.0), ("b", 300.0, 900.0), ("c", 2000.0, 3000.0)]
    module._log_compilations(seqs, [[0, 1], [2]], out)
    module._log_compilations(seqs, [[0, 1]], out)  # the next pool: same shape
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "groups of 2 with a 1024-token static cache; its first group took 2.2 s" in lines[0]
    assert "groups of 1 with a 2048-token static cache" in lines[1] and "2 shape(s) in this process" in lines[1]
    assert CompileLog.of(module.backbone.model).first_s == {(2, 1024): 2.2, (1, 2048): 5.0}
