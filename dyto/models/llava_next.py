"""``DyToVideoQA``: training-free video QA with LLaVA-NeXT and a visual-token reducer.

Per question (spec §1): frames ``[T,3,S,S]`` -> CLIP penultimate layer, CLS dropped ->
projector -> features ``[T,N,D]`` -> reducer -> tokens ``[L,D]`` -> spliced into the prompt's
text embeddings -> greedy generation. No anyres tiling and no ``image_newline``: the reference
feeds a 4-D tensor, which bypasses both.
"""

from __future__ import annotations

import contextlib
import copy
import time

import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from transformers import GenerationConfig, LlavaNextForConditionalGeneration, LogitsProcessor, LogitsProcessorList

from dyto.datamodules.video import CLIP_MEAN, CLIP_STD
from dyto.models.inputs import TOKENIZATIONS, left_pad, splice, tokenize_prompt
from dyto.models.loading import load_llava_next, resolve_attn_implementation, resolve_dtype
from dyto.models.prompts import default_conv_mode, model_family, render_prompt
from dyto.records import prediction_record
from dyto.reduction import DyToReducer, TokenReducer

OVERFLOWS = ("too_long", "truncate")


class _FirstTokenTimer(LogitsProcessor):
    """Notes when the first logits exist, i.e. when the prefill forward pass has finished.

    It returns the scores unchanged, so greedy decoding is unaffected; splitting ``generate``
    at this moment measures prefill and decoding without running the prefill twice.
    """

    def __init__(self, sync):
        self.sync, self.first = sync, None

    def __call__(self, input_ids, scores):
        if self.first is None:
            self.sync()
            self.first = time.perf_counter()
        return scores


class DyToVideoQA(LightningModule):
    """LLaVA-NeXT video QA; ``predict_step`` returns one prediction record per batch entry.

    Args:
        model: "tiny" (the in-memory RANDOM-WEIGHT model), a hub id such as
            ``llava-hf/llava-v1.6-vicuna-7b-hf`` / ``llava-hf/llava-v1.6-34b-hf``, or a local dir.
        reducer: the visual-token reducer; None means ``DyToReducer()`` (the release config).
        conv_mode: prompt template; None picks the reference's from the model family ("34b" in
            the name or not) and each record's task.
        dtype: "auto" = fp16 with CUDA, fp32 without; or float16 | bfloat16 | float32.
        attn_implementation: "sdpa" (default: PyTorch's fused attention, numerically the
            reference's default attention); "flash_attention_2" (needs CUDA and flash-attn: faster,
            different rounding); "eager"; "auto" = flash_attention_2 where available, else sdpa.
        max_new_tokens: greedy decoding budget (reference: 128).
        vision_chunk_size: frames per vision-tower forward; bounds activation memory.
        max_length: limit on prompt tokens + visual tokens + max_new_tokens (reference: 8192).
        overflow: "too_long" marks a longer input with that status; "truncate" cuts the input
            embeddings on the right at ``max_length`` as the reference does (it may cut the question).
        tokenization: "reference" (chunk-wise, see :func:`dyto.models.inputs.tokenize_prompt`) or "whole".
        rope_scaling_factor: dynamic NTK RoPE factor (reference: 2.0); None leaves RoPE as shipped.
        generation_batch_size: sequences per ``generate`` call; None = all of a batch at once.
        encode_ahead: encode the next batch's frames (``batch["upcoming"]``, see
            :class:`~dyto.datamodules.base.LookaheadDataLoader`) on a second CUDA stream while
            this batch's answers are generated, on a higher-priority stream; generation is
            launch-bound and leaves the GPU mostly idle. Off by default (repeatability); None =
            on with CUDA. A question's
            ``encode`` timing is then the time it waited for its features. The features are
            bitwise the same (checked on an H100), but cuBLAS promises bitwise-equal results only
            while one stream is active, so a generation can differ in rounding; False keeps the
            run on one stream (1 of 16 random-weight answers diverged after 32 tokens on an H100).
        seed: recorded in every prediction; also seeds the tiny model's weights.
    """

    def __init__(
        self,
        model: str = "tiny",
        reducer: TokenReducer | None = None,
        conv_mode: str | None = None,
        dtype: str = "auto",
        attn_implementation: str = "sdpa",
        max_new_tokens: int = 128,
        vision_chunk_size: int = 16,
        max_length: int = 8192,
        overflow: str = "too_long",
        tokenization: str = "reference",
        rope_scaling_factor: float | None = 2.0,
        generation_batch_size: int | None = None,
        encode_ahead: bool | None = False,
        seed: int = 0,
    ):
        super().__init__()
        if overflow not in OVERFLOWS:
            raise ValueError(f"unknown overflow {overflow!r}; expected one of {OVERFLOWS}")
        if max_new_tokens < 1 or vision_chunk_size < 1:
            raise ValueError(f"max_new_tokens and vision_chunk_size must be >= 1, got {max_new_tokens}, {vision_chunk_size}")
        if tokenization not in TOKENIZATIONS:
            raise ValueError(f"unknown tokenization {tokenization!r}; expected one of {TOKENIZATIONS}")
        self.save_hyperparameters(ignore=["reducer"])
        self.reducer = reducer if reducer is not None else DyToReducer()
        self.conv_mode, self.max_new_tokens, self.max_length = conv_mode, max_new_tokens, max_length
        self.vision_chunk_size, self.overflow, self.tokenization = vision_chunk_size, overflow, tokenization
        self.generation_batch_size, self.seed, self.family = generation_batch_size, seed, model_family(model)
        self.encode_ahead = encode_ahead
        # id -> (features [T,N,D], cls [T,D] | None, CUDA event | None), for the next batch only
        self._encoded_ahead: dict[str, tuple[Tensor, Tensor | None, torch.cuda.Event | None]] = {}
        self._streams: tuple[torch.cuda.Stream, torch.cuda.Stream] | None = None  # (generation, encode-ahead)
        self.num_frames = self.reducer.num_frames
        self.image_mean, self.image_std = CLIP_MEAN, CLIP_STD
        self.attach_backbone(*load_llava_next(
            model, resolve_dtype(dtype), resolve_attn_implementation(attn_implementation), rope_scaling_factor, seed
        ))

    def attach_backbone(self, llava: LlavaNextForConditionalGeneration, tokenizer, model_name: str) -> None:
        """Use an already built LLaVA-NeXT and tokenizer (``__init__`` calls this after loading).

        Benchmarks use it to run models that have no checkpoint, such as a full-size LLaVA-NeXT
        with random weights; ``model_name`` is what prediction records show.
        """
        self.llava, self.tokenizer, self.model_name = llava, tokenizer, model_name
        vision = llava.config.vision_config
        self.image_size = vision.image_size
        self.grid = (vision.image_size // vision.patch_size,) * 2
        pad_id = tokenizer.pad_token_id
        self.pad_token_id = pad_id if pad_id is not None else tokenizer.eos_token_id
        # Start from the checkpoint's own generation config (its eos ids, e.g. ChatML's
        # <|im_end|> for 34B) and impose the reference's greedy settings on top.
        base = getattr(llava, "generation_config", None)
        self.generation_config = copy.deepcopy(base) if base is not None else GenerationConfig()
        self.generation_config.update(
            do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens, use_cache=True,
            pad_token_id=self.pad_token_id, temperature=None, top_p=None, top_k=None,
            # plain greedy decoding whatever the checkpoint's config says
            repetition_penalty=1.0, no_repeat_ngram_size=0, length_penalty=1.0, min_length=0,
            min_new_tokens=None, bad_words_ids=None, suppress_tokens=None, begin_suppress_tokens=None,
        )
        if self.generation_config.eos_token_id is None:
            self.generation_config.eos_token_id = tokenizer.eos_token_id

    def fingerprint(self) -> dict:
        """Every model-side setting that can change an answer, as plain values (the run fingerprint).

        Resolved values, not the requested ones: ``dtype: auto`` is recorded as the dtype it chose,
        so the same config on a CPU and on a GPU gives different fingerprints, as it should.
        """
        config = self.llava.config
        return {
            "checkpoint": self.model_name,
            "revision": getattr(config, "_commit_hash", None),
            "dtype": str(self.llava.dtype).removeprefix("torch."),
            "attn_implementation": config._attn_implementation,
            "vision_feature_layer": config.vision_feature_layer,
            "rope_scaling": getattr(config.text_config, "rope_scaling", None),
            "reducer": self.reducer.config(),
            "conv_mode": self.conv_mode or "auto",
            "tokenization": self.tokenization,
            "generation": {k: v for k, v in self.generation_config.to_diff_dict().items()
                           if k not in ("transformers_version",)},
            "max_length": self.max_length,
            "overflow": self.overflow,
            "encode_ahead": bool(self.encodes_ahead),
            "seed": self.seed,
        }

    # -- stages ----------------------------------------------------------------------------
    def _sync(self) -> None:
        # the current stream only: a timer must not wait for the encode-ahead stream
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    def _now(self) -> float:
        self._sync()
        return time.perf_counter()

    def vision_hidden(self, pixels: Tensor) -> Tensor:
        """CLIP's hidden state at ``vision_feature_layer`` for ``[t,3,S,S]`` -> ``[t,1+N,C]``.

        Runs only the encoder layers up to that layer: the HF tower's ``hidden_states[k]`` is the
        output of layer k (0 = the embeddings after ``pre_layrnorm``), and the layers after the
        feature layer (the last one, for the reference's -2) never influence an answer. That is
        1/24 less vision compute than the full tower and no stack of all hidden states held in
        memory; the result is bit-identical to ``tower(x, output_hidden_states=True)
        .hidden_states[vision_feature_layer]`` (tested).
        """
        tower = self.llava.model.vision_tower
        layers = tower.encoder.layers
        hidden = tower.pre_layrnorm(tower.embeddings(pixels))
        for block in layers[: self.llava.config.vision_feature_layer % (len(layers) + 1)]:
            hidden = block(hidden, None)
        return hidden

    @torch.no_grad()
    def encode_frames(self, pixel_values: Tensor, with_cls: bool = False) -> tuple[Tensor, Tensor | None]:
        """``[T,3,S,S]`` -> (patch features ``[T,N,D]``, projected CLS ``[T,D]`` or None).

        The penultimate CLIP layer (``vision_feature_layer``) with CLS dropped, through the
        projector, as the reference's ``feature_select('patch')`` + ``mm_projector``, in chunks
        of ``vision_chunk_size`` frames. With ``with_cls`` the CLS hidden state of the same layer
        goes through the same projector, so a reducer that wants it (``needs_cls``: the paper's
        descriptor) gets a vector in the same space as the tokens.
        """
        tower, projector = self.llava.model.vision_tower, self.llava.model.multi_modal_projector
        feats, cls = [], []
        # one copy of all frames first: from pinned memory it does not block this thread, so a
        # side stream's chunks are all queued at once
        pixel_values = pixel_values.to(self.device, non_blocking=True)
        for chunk in pixel_values.split(self.vision_chunk_size):
            hidden = self.vision_hidden(chunk.to(dtype=tower.dtype))
            feats.append(projector(hidden[:, 1:]))
            if with_cls:
                cls.append(projector(hidden[:, :1])[:, 0])
        return torch.cat(feats), torch.cat(cls) if with_cls else None

    @property
    def encodes_ahead(self) -> bool:
        return self.device.type == "cuda" if self.encode_ahead is None else self.encode_ahead

    def _encode_upcoming(self, upcoming) -> None:
        """Queue CLIP + projector for the readable videos of the next batch (an ``UpcomingBatch``).

        On CUDA the work goes to a side stream and returns at once; elsewhere it runs here (no
        overlap, but the same bookkeeping, which is what the CPU tests check). A failure (say,
        out of memory) only means the video is encoded in its own step, where it is reported.
        """
        side = self._streams[1] if self._streams is not None else None
        if side is not None:
            side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
            for sample_id, pixels in zip(upcoming.ids, upcoming.pixel_values):
                if pixels is None:
                    continue
                try:
                    features, cls = self.encode_frames(pixels, with_cls=self.reducer.needs_cls)
                except Exception:  # encoded again in its own step, whose record reports the error
                    continue
                done = None
                if side is not None:
                    done = torch.cuda.Event()
                    done.record(side)
                self._encoded_ahead[sample_id] = (features, cls, done)

    def _features(self, pixel_values: Tensor, ahead) -> tuple[Tensor, Tensor | None]:
        """This question's features: encoded now, or taken over from the previous step's side stream."""
        if ahead is None or ahead[0].shape[0] != pixel_values.shape[0]:
            return self.encode_frames(pixel_values, with_cls=self.reducer.needs_cls)
        features, cls, done = ahead
        if done is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(done)
            for t in (features, cls):
                if t is not None:
                    t.record_stream(stream)  # side-stream memory: not reused before this stream is done with it
        return features, cls

    def _prepare(self, qa: dict, pixel_values: Tensor, timings: dict, ahead=None) -> tuple[dict, list[Tensor]]:
        """Encode (or collect ``ahead``), reduce and build the input embeddings ``[S_q, D]`` of each question of ``qa``."""
        conv_mode = self.conv_mode or default_conv_mode(self.family, qa["task"])
        t0 = self._now()
        features, cls = self._features(pixel_values, ahead)
        t1 = self._now()
        reduction = self.reducer(features, self.grid, cls)
        t2 = self._now()
        timings.update(encode=(t1 - t0) * 1e3, reduce=(t2 - t1) * 1e3)
        questions = [qa["question"]]
        if qa["task"] == "vcg_consistency":
            if not qa.get("question2"):
                raise ValueError("vcg_consistency record without question2")
            questions.append(qa["question2"])
        values = dict(
            conv_mode=conv_mode, frames_kept=[int(i) for i in reduction.frames_kept],
            visual_tokens_in=features.shape[0] * features.shape[1], visual_tokens_out=reduction.tokens.shape[0],
        )
        embed, sequences = self.llava.get_input_embeddings(), []
        for q in questions:
            before, after = tokenize_prompt(self.tokenizer, render_prompt(conv_mode, q, qa.get("options")), self.tokenization)
            seq = splice(embed, before, reduction.tokens, after)
            length = seq.shape[0]
            if length + self.max_new_tokens > self.max_length:
                if self.overflow == "too_long":
                    values.update(status="too_long", prompt_tokens=length, error=(
                        f"{length} prompt tokens ({length - values['visual_tokens_out']} text + "
                        f"{values['visual_tokens_out']} visual) + max_new_tokens {self.max_new_tokens} "
                        f"> max_length {self.max_length}"))
                    return values, []
                if length > self.max_length:
                    seq = seq[: self.max_length]
                    values["error"] = f"input truncated on the right from {length} to {self.max_length} tokens"
            values.setdefault("prompt_tokens", seq.shape[0])
            sequences.append(seq)
        return values, sequences

    @torch.no_grad()
    def generate(self, sequences: list[Tensor]) -> list[tuple[str, float, float]]:
        """Greedy answers for input embeddings ``[S_i, D]``: (text, prefill ms, generate ms) each.

        Sequences are left-padded into batches of ``generation_batch_size``. A batch's prefill
        time is shared in proportion to sequence length, its decoding time equally.
        """
        size = self.generation_batch_size or len(sequences)
        pad = self.llava.get_input_embeddings()(torch.tensor(self.pad_token_id, device=self.device))
        out = []
        for start in range(0, len(sequences), size):
            group = sequences[start : start + size]
            embeds, mask = left_pad(group, pad)
            timer = _FirstTokenTimer(self._sync)
            t0 = self._now()
            ids = self.llava.generate(
                inputs_embeds=embeds, attention_mask=mask, generation_config=self.generation_config,
                logits_processor=LogitsProcessorList([timer]),
            )
            t1 = self._now()
            prefill, decode = (timer.first - t0) * 1e3, (t1 - timer.first) * 1e3
            total = sum(s.shape[0] for s in group)
            texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
            out += [(t.strip(), prefill * s.shape[0] / total, decode / len(group)) for t, s in zip(texts, group)]
        return out

    # -- Lightning ---------------------------------------------------------------------------
    def on_predict_epoch_start(self) -> None:
        self._encoded_ahead.clear()
        if self.encodes_ahead and self.device.type == "cuda" and self._streams is None:
            # lower is more urgent; the default stream and the side stream have priority 0
            self._streams = (torch.cuda.Stream(self.device, priority=-1), torch.cuda.Stream(self.device))

    def on_predict_epoch_end(self) -> None:
        self._encoded_ahead.clear()

    @torch.no_grad()
    def predict_step(self, batch: dict, batch_idx: int = 0) -> list[dict]:
        """One prediction record per batch entry, in batch order; no entry can crash the batch."""
        if self._streams is None:
            return self._predict(batch)
        main = self._streams[0]
        main.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(main):
            records = self._predict(batch)
        torch.cuda.current_stream(self.device).wait_stream(main)
        return records

    def _predict(self, batch: dict) -> list[dict]:
        common = dict(reducer=self.reducer.config(), model=self.model_name, seed=self.seed)
        ahead, self._encoded_ahead = self._encoded_ahead, {}  # only the previous step's look-ahead is valid
        values, jobs = [], []  # jobs: (entry index, field, input embeddings)
        for i, qa in enumerate(batch["records"]):
            timings = {"decode": batch["decode_ms"][i]}
            v = dict(common, status=batch["status"][i], error=batch["error"][i] or None, timings=timings,
                     frames_sampled=len(batch["frame_indices"][i] or []))
            if v["status"] == "ok":
                try:
                    prepared, sequences = self._prepare(qa, batch["pixel_values"][i], timings,
                                                        ahead.pop(batch["ids"][i], None))
                    v.update(prepared)
                    jobs += [(i, field, s) for field, s in zip(("prediction", "prediction2"), sequences)]
                except Exception as e:  # a per-sample failure becomes an error record
                    v.update(status="error", error=f"{type(e).__name__}: {e}")
            values.append(v)
        ahead.clear()
        if self.encodes_ahead and batch.get("upcoming") is not None:
            self._encode_upcoming(batch["upcoming"])
        try:
            answers = self.generate([s for _, _, s in jobs]) if jobs else []
        except Exception as e:
            answers = None
            for i, _, _ in jobs:
                values[i].update(status="error", error=f"generation failed: {type(e).__name__}: {e}")
        for (i, field, _), (text, prefill, decode) in zip(jobs, answers or []):
            if batch["records"][i]["task"] == "multiple_choice":
                text = text.replace("In the image", "In the video")
            timings = values[i]["timings"]
            timings["prefill"] = timings.get("prefill", 0.0) + prefill
            timings["generate"] = timings.get("generate", 0.0) + decode
            values[i][field] = text
        return [prediction_record(qa, **v) for qa, v in zip(batch["records"], values)]
