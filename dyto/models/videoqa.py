"""``VideoQA``: training-free video QA over any backbone, with a visual-token reducer.

Per question (docs/method.md §1): frames ``[T,3,H,W]`` -> ``backbone.encode`` -> features ``[T',N,D]``
(+ CLS) -> reducer -> tokens ``[L,D]`` -> ``backbone.build_input`` (prompt text embeddings with
the tokens spliced in, positions) -> greedy ``backbone.generate``. This module owns what every
backbone shares: timings per stage, statuses, ``max_length`` overflow, batching of generation
and the model-side fingerprint; encode-ahead on a side CUDA stream is :mod:`dyto.models.encode_ahead`.

Changed against the pre-backbone ``DyToVideoQA``: the LLaVA-NeXT specifics (CLIP layer, CLS
drop, projector, conv modes, chunked tokenisation, the "In the image" fix) moved to
:class:`dyto.models.llava_next.LlavaNext`; ``DyToVideoQA`` is kept there with its old arguments
and bit-identical answers (tests/test_golden_demo.py).

    dyto predict --config configs/models/llava_onevision_7b.yaml --config configs/reducers/dyto.yaml \\
                 --config configs/benchmarks/nextqa.yaml
"""

from __future__ import annotations

import copy
import time

import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from dyto.errors import ConfigError, check
from dyto.models.backbone import Backbone, LLMInput, Prompt, VisualFeatures, build_backbone, check_reducer_fits
from dyto.models.batching import BATCH_ORDERS, generate_in_groups, plan_groups
from dyto.models.cost import LayerCounts, record_cost, text_shape
from dyto.models.encode_ahead import EncodeAhead, encode_pool
from dyto.models.generation_loop import (GENERATION_LOOPS, STATIC_CACHE_BUCKET, CompileLog, resolve_generation_loop,
                                        static_cache_length, static_compiled_config)
from dyto.models.lmms_eval import task_prompt
from dyto.models.graphed_loop import GraphedLoop, packed_gqa
from dyto.models.graphed_loop import unsupported as graphed_unsupported
from dyto.models.inner import InnerLoop, InnerStage
from dyto.models.rope import dynamic_rope_limit
from dyto.records import prediction_record
from dyto.reduction import DyToReducer, TokenReducer

OVERFLOWS = ("too_long", "truncate")
PROTOCOLS = ("reference", "lmms_eval")
ENCODE_BATCHES = ("question", "pool")


class VideoQA(LightningModule):
    """Video QA over a backbone; ``predict_step`` returns one prediction record per batch entry.

    Args:
        backbone: a :class:`~dyto.models.backbone.Backbone` (YAML: ``class_path`` + ``init_args``)
            or a registry name (``llava_next``, ``llava_onevision``, ``internvl``, ...), which builds
            that family's tiny RANDOM-WEIGHT model seeded with ``seed``.
        reducer: the visual-token reducer; None means ``DyToReducer()`` (the release config).
        max_new_tokens: greedy decoding budget (reference: 128).
        max_length: limit on prompt tokens + visual tokens + max_new_tokens (reference: 8192).
        overflow: "too_long" marks a longer input with that status; "truncate" cuts the input
            embeddings on the right at ``max_length`` as the reference does (it may cut the question).
        generation_batch_size: sequences per ``generate`` call; None = all of a batch at once;
            ``"auto"`` (default) = on CUDA as many as the KV cache of the group's longest prompt
            lets ``AUTO_MEMORY_SHARE`` of the memory beside the weights hold (fixed per GPU model and checkpoint, so reruns form the same groups), elsewhere all at once (as None).
            The DataModule batch is the pool groups are cut from (docs/throughput.md).
        batch_order: ``"length"`` (default) cuts groups from the pool sorted by prompt length
            (little left padding); ``"input"`` cuts them in batch order. No effect when one group
            holds the whole pool. Answers return to their questions either way.
        generation_loop: ``"eager"`` (default: HF's decoding loop), ``"static_compiled"``
            (static KV cache + ``torch.compile``d decoding step; falls back to eager, with one line
            saying why, where it cannot run) or ``"graphed"`` (dyto's greedy loop on the same static
            cache, the whole step one CUDA graph, :mod:`dyto.models.graphed_loop`). See
            :mod:`dyto.models.generation_loop`.
        encode_ahead: encode the next batch's frames (``batch["upcoming"]``) on a second CUDA
            stream while this batch's answers are generated, on a higher-priority stream. Off by
            default (repeatability: cuBLAS promises bitwise-equal results only while one stream
            is active); None = on with CUDA. A question's ``encode`` timing is then the time it
            waited for its features.
        seed: recorded in every prediction (and seeds a tiny backbone given by name).
        protocol: ``"reference"`` (default: the DyTo reference's prompts, frames and parser) or
            ``"lmms_eval"``: lmms-eval's, as a whole (docs/backbones.md, "The lmms-eval protocol"):
            the benchmark's lmms-eval task gives the user text, ``max_new_tokens`` and the answer
            parser; the backbone's ``lmms_eval_model()`` the template, frames, sampling and
            resolution. The reducer's ``num_frames``, ``max_new_tokens`` here (except where the task
            sets none and the model file's default exceeds ``max_length``) and ``clean_answer`` do
            not apply then.
        inner_stage: an inner-LLM stage (:mod:`dyto.models.inner`: ``fastv``, ``dycoke_kv``,
            ``prunevid_llm``, ``holitom_inner``) run after the reducer, inside the language model;
            None (default) generates with Hugging Face's ``generate``. With a stage, answers come
            from dyto's own greedy loop over the model's decoder layers (eager decoding).
        encode_batch: ``"question"`` (default: one vision-tower pass per question, as the
            reference) or ``"pool"``: the questions of a DataModule batch through the backbone's
            ``encode_many`` together (Qwen2.5-VL: one tower call for the pool; other families
            encode one by one anyway). The matrix products' rounding depends on their row count, so
            features can differ in the last bits (at the 7B's widths on the CPU, ~1e-6 in fp32; the
            tiny models' are bitwise equal), and so can a greedy answer after a near-tie
            (docs/throughput.md). A batch of one is unchanged.
    """

    def __init__(
        self,
        backbone: Backbone | str = "llava_next",
        reducer: TokenReducer | None = None,
        max_new_tokens: int = 128,
        max_length: int = 8192,
        overflow: str = "too_long",
        generation_batch_size: int | str | None = "auto",
        encode_ahead: bool | None = False,
        seed: int = 0,
        batch_order: str = "length",
        generation_loop: str = "eager",
        protocol: str = "reference",
        inner_stage: InnerStage | None = None,
        encode_batch: str = "question",
    ):
        super().__init__()
        check("encode_batch", encode_batch, ENCODE_BATCHES)
        self.encode_batch = encode_batch
        if protocol not in PROTOCOLS:
            raise ConfigError("protocol", protocol, " | ".join(PROTOCOLS))
        self.protocol = protocol
        self.check_settings(max_new_tokens, max_length, overflow, generation_batch_size, batch_order, generation_loop)
        self.batch_order, self.generation_loop = batch_order, generation_loop
        self._loop_reported: set[str] = set()  # fallback reasons already printed (once each)
        self._graphed: GraphedLoop | None = None  # generation_loop graphed: dyto's loop, made at first use
        self.save_hyperparameters(ignore=["reducer", "backbone", "inner_stage"])
        self.reducer = reducer if reducer is not None else DyToReducer()
        self.inner_stage = inner_stage
        self.max_new_tokens, self.max_length, self.overflow = max_new_tokens, max_length, overflow
        self.generation_batch_size, self.seed, self.encode_ahead = generation_batch_size, seed, encode_ahead
        self.lookahead = EncodeAhead()  # features for the next step: encoded ahead, or handed over (use_features)
        self._max_new: dict[int, int] = {}  # id(LLMInput) -> its max_new_tokens, for the current step
        self.num_frames = self.reducer.num_frames
        self.set_backbone(build_backbone(backbone, seed=seed) if isinstance(backbone, str) else backbone)

    @staticmethod
    def check_settings(max_new_tokens: int, max_length: int, overflow: str, generation_batch_size: int | str | None,
                       batch_order: str, generation_loop: str) -> None:
        """``ConfigError`` for a setting this module cannot run with (before any backbone loads)."""
        check("max_new_tokens", max_new_tokens, ">=1")
        check("max_length", max_length, ">=1")
        check("overflow", overflow, OVERFLOWS)
        check("generation_batch_size", generation_batch_size, ">=1", optional=True, also=("auto",))
        check("batch_order", batch_order, BATCH_ORDERS)
        check("generation_loop", generation_loop, GENERATION_LOOPS)

    def set_backbone(self, backbone: Backbone) -> None:
        """Use ``backbone`` (``__init__`` calls this; benchmarks swap in full-size random weights)."""
        self.backbone = backbone
        backbone.pooled_encoding = self.encode_batch == "pool"
        # under lmms_eval the backbone's lmms-eval model file decides frames, sampling and resolution
        self.lmms_model = backbone.lmms_eval_model() if self.protocol == "lmms_eval" else None
        if self.lmms_model is not None:
            self.num_frames = self.lmms_model.num_frames
        per_patch = self.preprocessing.frames_per_patch
        if self.num_frames % per_patch:
            raise ConfigError("reducer.init_args.num_frames", self.num_frames, f"a multiple of {per_patch}",
                              f"{backbone.name} folds {per_patch} frames into one temporal patch")
        check_reducer_fits(self.reducer, backbone)
        self.hparams["model"] = backbone.run_label
        self.hparams["backbone"] = backbone.name
        self.text_shape = text_shape(backbone.model.config)
        if self.inner_stage is not None:
            self.inner_stage.check(self.text_shape.layers)
        self.generation_config = backbone.generation_defaults()
        self.generation_config.update(
            do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens, use_cache=True,
            temperature=None, top_p=None, top_k=None,
            # plain greedy decoding whatever the checkpoint's config says
            repetition_penalty=1.0, no_repeat_ngram_size=0, length_penalty=1.0, min_length=0,
            min_new_tokens=None, bad_words_ids=None, suppress_tokens=None, begin_suppress_tokens=None,
        )

    # what the DataModule, the pictures and the benchmarks read; the backbone owns them
    preprocessing = property(lambda self: (self.lmms_model or self.backbone).preprocessing)
    sampling = property(lambda self: self.lmms_model.sampling if self.lmms_model else None)  # None: the data side's
    image_size = property(lambda self: self.preprocessing.size[0])
    image_mean = property(lambda self: self.preprocessing.mean)
    image_std = property(lambda self: self.preprocessing.std)
    grid = property(lambda self: self.backbone.grid)
    model_name = property(lambda self: self.backbone.model_name)
    tokenizer = property(lambda self: self.backbone.tokenizer)
    pad_token_id = property(lambda self: self.backbone.pad_token_id)

    def fingerprint(self) -> dict:
        """Every model-side setting that can change an answer, as plain values (the run fingerprint).

        The backbone's entries (checkpoint, revision, resolved dtype and attention, prompt mode,
        tokenisation, ...) plus the pipeline's. Resolved values, not the requested ones.
        """
        stage = {} if self.inner_stage is None else {"inner_stage": self.inner_stage.config()}
        loop = self.resolved_generation_loop()[0]
        return {
            "backbone": self.backbone.name,
            **self.backbone.fingerprint(),
            "reducer": self.reducer.config(),
            **stage,  # only when set, so runs without a stage keep their digest
            "generation": {k: v for k, v in self.generation_config.to_diff_dict().items()
                           if k not in ("transformers_version",)},
            "max_length": self.max_length,
            "overflow": self.overflow,
            "encode_ahead": bool(self.encodes_ahead),
            "seed": self.seed,
            # how answers are batched and decoded (on a GPU each can change a greedy answer)
            "generation_batch_size": self.generation_batch_size,
            "batch_order": self.batch_order,
            "generation_loop": loop,
            # the compiled loops read grouped KV heads as cached (graphed_loop.packed_gqa): a static_compiled
            # run made before, which repeated them per head (other rounding), does not resume into this one
            **({"decode_attention": "packed_gqa"} if loop != "eager" else {}),
            # absent = one question at a time, so runs made before the setting existed resume
            **({"encode_batch": self.encode_batch} if self.encode_batch != "question" else {}),
            # absent = reference, so runs made before the protocol setting existed resume
            **({"protocol": self.protocol, "lmms_eval": self.lmms_model.config()} if self.lmms_model else {}),
        }

    # -- stages ----------------------------------------------------------------------------
    def _sync(self) -> None:
        # the current stream only: a timer must not wait for the encode-ahead stream
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    def _now(self) -> float:
        self._sync()
        return time.perf_counter()

    @torch.no_grad()
    def encode(self, pixel_values: Tensor, with_cls: bool = False) -> VisualFeatures:
        """``[T,3,H,W]`` -> the backbone's per-frame tokens (see :meth:`Backbone.encode`)."""
        return self.backbone.encode(pixel_values, with_cls=with_cls)

    def encode_frames(self, pixel_values: Tensor, with_cls: bool = False, with_extras: bool = False):
        """``(features [T',N,D], cls [T',D] | None)``: :meth:`encode` as the pre-backbone tuple;
        ``with_extras`` adds the backbone's extra per-token tensors (a tuple, each [T',N,E])."""
        out = self.encode(pixel_values, with_cls=with_cls)
        return (out.features, out.cls, tuple(out.extras)) if with_extras else (out.features, out.cls)

    @property
    def encodes_ahead(self) -> bool:
        return self.device.type == "cuda" if self.encode_ahead is None else self.encode_ahead

    def use_features(self, encoded: dict[str, tuple]) -> None:
        """Features already computed, ``id -> (features [T',N,D], cls [T',D] | None[, extras])``, for the next
        ``predict_step`` only: its entries with these ids skip the encoder (``dyto sweep`` encodes a
        video once for a whole reducer grid). The encode-ahead hand-over, without a stream."""
        self.lookahead.hand_over(encoded)

    def _encode_many(self, pixels: list[Tensor]) -> list[tuple[Tensor, Tensor | None, tuple[Tensor, ...]]]:
        try:
            return [(f.features, f.cls, tuple(f.extras))
                    for f in self.backbone.encode_many(pixels, with_cls=self.reducer.needs_cls)]
        except Exception as e:
            if "encode_batch" not in self._loop_reported:  # said once; each question then reports its own error
                self._loop_reported.add("encode_batch")
                print(f"encode_batch pool: encoding {len(pixels)} videos together failed ({type(e).__name__}: {e}); "
                      "encoding them one by one", flush=True)
            raise

    def _encode_for_reducer(self, pixel_values: Tensor) -> tuple[Tensor, Tensor | None, tuple[Tensor, ...]]:
        """(features, cls, extras): what the reducer reads and what follows its assignment."""
        return self.encode_frames(pixel_values, with_cls=self.reducer.needs_cls, with_extras=True)

    def _prepare(self, qa: dict, pixel_values: Tensor, timings: dict, ahead=None,
                 frame_times: list[float] | None = None) -> tuple[dict, list[LLMInput]]:
        """Encode (or collect ``ahead``), reduce and build the LLM input of each question of ``qa``."""
        t0 = self._now()
        # taken over from the previous step (encode-ahead or use_features), else encoded now
        features, cls, extras = (EncodeAhead.collect(ahead, pixel_values.shape[0], self.preprocessing.frames_per_patch,
                                                     self.device) or self._encode_for_reducer(pixel_values))
        t1 = self._now()
        grid = self.backbone.grid_for(pixel_values)  # the video's own under lmms_eval (Qwen2.5-VL, InternVL)
        reduction = self.reducer(features, grid, cls).reduce_extras(extras)  # extras: the same keep/merge
        if reduction.grid is None:
            reduction.grid = grid
        reduction.frame_times = frame_times
        t2 = self._now()
        timings.update(encode=(t1 - t0) * 1e3, reduce=(t2 - t1) * 1e3)
        questions = [qa["question"]]
        if qa["task"] == "vcg_consistency":
            if not qa.get("question2"):
                raise ValueError("vcg_consistency record without question2")
            questions.append(qa["question2"])
        values = dict(frames_kept=[int(i) for i in reduction.frames_kept],
                      visual_tokens_in=features.shape[0] * features.shape[1], visual_tokens_out=reduction.tokens.shape[0])
        sequences = []
        for q in questions:
            prompt, max_new = self._prompt(qa, q)
            values.setdefault("conv_mode", prompt.mode)
            seq = self.backbone.build_input(prompt, reduction)
            length = seq.length
            if max_new is None:  # the lmms-eval model file's default (up to 32768) means "until EOS": bound it
                max_new = max(1, min(self.lmms_model.max_new_tokens, self.max_length - length))
            if length + max_new > self.max_length:
                if self.overflow == "too_long":
                    values.update(status="too_long", prompt_tokens=length, error=(
                        f"{length} prompt tokens ({length - seq.visual_tokens} text + "
                        f"{seq.visual_tokens} visual) + max_new_tokens {max_new} "
                        f"> max_length {self.max_length}"))
                    return values, []
                if length > self.max_length:
                    seq = seq.truncated(self.max_length)
                    values["error"] = f"input truncated on the right from {length} to {self.max_length} tokens"
            values.setdefault("prompt_tokens", seq.length)
            self._max_new[id(seq)] = max_new
            sequences.append(seq)
        return values, sequences

    def _prompt(self, qa: dict, question: str) -> tuple[Prompt, int | None]:
        """(the prompt, max_new_tokens; None: the lmms-eval model file's default, bounded by max_length)."""
        if self.lmms_model is None:
            return self.backbone.prompt(qa["task"], question, qa.get("options")), self.max_new_tokens
        return task_prompt(self.backbone, self.lmms_model, {**qa, "question": question})

    # -- generation --------------------------------------------------------------------------
    def resolved_generation_loop(self) -> tuple[str, str | None]:
        """(the loop that runs here, why it is not the requested one | None).

        The device is the trainer's when one is attached: the run fingerprint is taken in
        ``setup``, before Lightning moves the model there."""
        trainer = self._trainer
        device = trainer.strategy.root_device if trainer is not None else self.backbone.device
        loop, reason = resolve_generation_loop(self.generation_loop, self.backbone.model, device)
        if loop != "eager" and self.inner_stage is not None:
            return "eager", f"the inner stage {self.inner_stage.name} decodes in dyto's own loop (no static cache)"
        return loop, reason

    def generation_groups(self, sequences: list[LLMInput]) -> list[list[int]]:
        """Indices of ``sequences`` per ``generate`` call (see ``generation_batch_size``, ``batch_order``);
        a sequence that can pass the backbone's dynamic-RoPE limit gets a call of its own (:mod:`dyto.models.rope`)."""
        # a static cache is rounded up to its bucket: count a whole bucket more, to be safe
        extra = STATIC_CACHE_BUCKET if self.resolved_generation_loop()[0] != "eager" else 0
        return plan_groups([s.span for s in sequences], self.generation_batch_size, self.batch_order, self.backbone,
                           self.max_new_tokens, cache_extra=extra, rope_limit=dynamic_rope_limit(self.backbone.model))

    def _generation_config_for(self, group: list[LLMInput]):
        loop, reason = self.resolved_generation_loop()
        if reason is not None and reason not in self._loop_reported:
            self._loop_reported.add(reason)
            print(f"generation_loop: {self.generation_loop} unavailable, decoding eagerly: {reason}", flush=True)
        config = self.generation_config
        max_new = min((self._max_new.get(id(s), self.max_new_tokens) for s in group), default=self.max_new_tokens)
        if max_new != config.max_new_tokens:  # lmms_eval: the task's decoding length
            config = copy.deepcopy(config)
            config.max_new_tokens = max_new
        if loop == "static_compiled":
            return static_compiled_config(config, max(s.length for s in group))
        return config  # graphed: dyto's loop sizes its own static cache

    @torch.no_grad()
    def generate(self, sequences: list[LLMInput]) -> list[tuple[str, float, float]]:
        """Greedy answers: (stripped text, prefill ms, generate ms) per input, in input order.

        Inputs go to the backbone in the groups of :meth:`generation_groups`. A group's prefill
        time is shared in proportion to sequence length, its decoding time equally.
        """
        groups = self.generation_groups(sequences)
        self.last_group_sizes = [len(g) for g in groups]  # what the benchmarks report
        generate = None
        if self.inner_stage is not None:
            loop = InnerLoop(self.backbone, self.inner_stage)
            generate = lambda group, config, processors: self.backbone.tokenizer.batch_decode(  # noqa: E731
                loop.generate_ids(group, config, processors), skip_special_tokens=True)
        elif self.resolved_generation_loop()[0] == "graphed":
            generate = self._graphed_generate
        elif self.resolved_generation_loop()[0] == "static_compiled":
            generate = self._static_compiled_generate
        self.last_group_lengths = [[sequences[i].length for i in g] for g in groups]
        out = generate_in_groups(self.backbone, sequences, groups, self._generation_config_for, self._sync,
                                 generate=generate)
        loop = self.resolved_generation_loop()[0]
        if loop == "static_compiled" or (loop == "graphed" and self._graphed is not None and self._graphed.compile):
            self._log_compilations(sequences, groups, out)
        return out

    def _static_compiled_generate(self, group: list[LLMInput], config, processors) -> list[str]:
        """Hugging Face's ``generate`` with the decoder layers attending through ``packed_gqa``: its compiled
        step would otherwise copy the static cache once per query head of a KV head, every layer and step."""
        with packed_gqa(self.backbone.model):
            return self.backbone.generate(group, config, processors)

    def _graphed_generate(self, group: list[LLMInput], config, processors) -> list[str]:
        """``generation_loop: graphed`` for one group; a setting it does not implement decodes with
        Hugging Face's ``generate`` instead (one line says so, once)."""
        reason = graphed_unsupported(self.backbone.model, config)
        if reason is not None:
            self._say_once(f"generation_loop: graphed unavailable, decoding with generate: {reason}")
            return self.backbone.generate(group, config, processors)
        if self._graphed is None:
            self._graphed = GraphedLoop(self.backbone)
        ids = self._graphed.generate_ids(group, config, processors)
        for note in self._graphed.notes:
            self._say_once(f"generation_loop: graphed: {note}")
        return self.backbone.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def _say_once(self, line: str) -> None:
        if line not in self._loop_reported:
            self._loop_reported.add(line)
            print(line, flush=True)


    def _log_compilations(self, sequences: list[LLMInput], groups: list[list[int]], out: list) -> None:
        """One line per process and compiled shape (group size, static cache length): :class:`CompileLog`."""
        log = CompileLog.of(self.backbone.model)
        for group in groups:
            max_new = min(self._max_new.get(id(sequences[i]), self.max_new_tokens) for i in group)
            length = static_cache_length(max(sequences[i].length for i in group), max_new)
            seconds = sum(out[i][1] + out[i][2] for i in group) / 1e3
            line = log.note(len(group), length, seconds, max_new, self.resolved_generation_loop()[0])
            if line:
                print(line, flush=True)

    def prefill_cost(self, sequences: list[LLMInput]) -> dict:
        """``prefill_tflops``, ``kv_cache_mb``, ``visual_tokens_per_layer`` of one question's prefills
        (:mod:`dyto.models.cost`): per-layer counts from the inner loop, else every layer on the whole sequence."""
        layers = self.text_shape.layers
        counts = [s.counts or LayerCounts.uniform(layers, s.length, _visual_count(s)) for s in sequences]
        return record_cost(self.text_shape, counts, self.backbone.dtype)

    # -- Lightning ---------------------------------------------------------------------------
    def on_predict_epoch_start(self) -> None:
        self.lookahead.start(self.device, self.encodes_ahead)

    def on_predict_epoch_end(self) -> None:
        self.lookahead.clear()

    @torch.no_grad()
    def predict_step(self, batch: dict, batch_idx: int = 0) -> list[dict]:
        """One prediction record per batch entry, in batch order; no entry can crash the batch.
        With encode-ahead streams, on the generation stream (see :meth:`EncodeAhead.run`)."""
        return self.lookahead.run(lambda: self._predict(batch), self.device)

    def _predict(self, batch: dict) -> list[dict]:
        common = dict(reducer=self.reducer.config(), model=self.model_name, seed=self.seed, protocol=self.protocol,
                      inner_stage=None if self.inner_stage is None else self.inner_stage.config())
        self._max_new.clear()
        pooled_ms = encode_pool(self.lookahead, self._encode_many, batch, self._now) if self.encode_batch == "pool" else {}
        taken = self.lookahead.take()  # only the previous step's look-ahead is valid
        values, jobs = [], []  # jobs: (entry index, field, LLM input)
        for i, qa in enumerate(batch["records"]):
            timings = {"decode": batch["decode_ms"][i]}
            v = dict(common, status=batch["status"][i], error=batch["error"][i] or None, timings=timings,
                     frames_sampled=len(batch["frame_indices"][i] or []))
            if v["status"] == "ok":
                try:
                    prepared, sequences = self._prepare(qa, batch["pixel_values"][i], timings,
                                                        taken.pop(batch["ids"][i], None), frame_times(batch, i))
                    v.update(prepared)
                    timings["encode"] += pooled_ms.get(batch["ids"][i], 0.0)
                    jobs += [(i, field, s) for field, s in zip(("prediction", "prediction2"), sequences)]
                except Exception as e:  # a per-sample failure becomes an error record
                    v.update(status="error", error=f"{type(e).__name__}: {e}")
            values.append(v)
        taken.clear()
        if self.encodes_ahead and batch.get("upcoming") is not None:
            self.lookahead.queue(batch["upcoming"], self._encode_for_reducer, self.device)
        try:
            answers = self.generate([s for _, _, s in jobs]) if jobs else []
        except Exception as e:
            answers = None
            for i, _, _ in jobs:
                values[i].update(status="error", error=f"generation failed: {type(e).__name__}: {e}")
        for (i, field, _), (text, prefill, decode) in zip(jobs, answers or []):
            timings = values[i]["timings"]
            timings["prefill"] = timings.get("prefill", 0.0) + prefill
            timings["generate"] = timings.get("generate", 0.0) + decode
            values[i][field] = text if self.lmms_model else self.backbone.clean_answer(batch["records"][i]["task"], text)
        if answers:
            for i in {i for i, _, _ in jobs}:
                values[i].update(self.prefill_cost([s for j, _, s in jobs if j == i]))
        return [prediction_record(qa, **v) for qa, v in zip(batch["records"], values)]


def _visual_count(seq: LLMInput) -> int:
    """The reducer's tokens in ``seq`` (a model's own extra rows, LLaVA-OneVision's newline, not counted)."""
    if seq.visual_rows is not None:
        return len(seq.visual_rows)
    if seq.visual_span is not None:
        return seq.visual_span[1] - seq.visual_span[0]
    return seq.visual_tokens


def frame_times(batch: dict, i: int) -> list[float] | None:
    """Seconds of entry ``i``'s sampled frames (index / fps, as Qwen3-VL's processor computes them);
    None without indices; a batch without a usable fps gets the processor's fallback of 24."""
    indices = (batch.get("frame_indices") or [None] * (i + 1))[i]
    if not indices:
        return None
    fps = (batch.get("fps") or [None] * (i + 1))[i]
    fps = fps if fps else 24.0
    return [index / fps for index in indices]
