"""Greedy decoding in dyto's own loop, a whole step per CUDA graph: ``generation_loop: graphed``.

Why. Under ``static_compiled`` the decoding step's *forward* is a compiled CUDA graph, but Hugging
Face's ``generate`` still does, per token and on the host, the rest: its input bookkeeping, the
mask builder, the logits processors, the greedy choice and the stopping criteria, whose
``unfinished.max() == 0`` waits for the device every step. On an H200 at 7B and batch 1 that was
~3 ms of host time beside 5.3 ms of kernels (benchmarks/results/gpu_check_h200_2026-12-04). Here
one function does the whole step on device tensors only (embedding of the last token, positions,
mask, rotary embedding, decoder layers, norm, LM head, the ``min_new_tokens`` and EOS rules, the
greedy choice, and the writes the next step reads); on CUDA it is compiled by inductor (kernels
only, no CUDA graphs of its own) and then captured whole as one CUDA graph, once per group shape:
the static cache and the step's buffers stay while the next group has the same shape (the cache is
cleared, the buffers refilled, the graph replayed), as transformers keeps one static cache. The
host replays the graph and looks at the device only every ``sync_every`` steps.

The prefill runs eagerly and one row at a time: each prompt alone, unpadded, with causal attention
over its own tokens, exactly as one question at a time computes it, its keys and values then
copied into the group's static cache at the row's left-padded columns. So a pooled answer's first
token and KV cache are the batch-1 ones on any device (only the batched decoding steps round
differently), and the attention needs no padding mask (on a GPU, the causal flash kernels).

What it does as ``generate`` does (the loop of :mod:`dyto.models.inner.loop`, without a stage):
the inputs of ``Backbone.llm_batch``; a static KV cache of ``static_cache_length`` positions, as
``static_compiled``; the model's own mask builder, rotary embedding (M-RoPE on the Qwen families),
decoder layers, norm and head; decoding positions after each row's last prompt position; greedy
choice; EOS logits at -inf before ``min_new_tokens``; a finished row gets pad tokens. On the CPU
(no graph, no compilation) the token ids are bitwise ``generate``'s on every tiny backbone, alone
and left-padded in a batch (tests/test_graphed_loop.py); the step also traces with ``fullgraph=True``
(no graph break, so nothing in it needs the host) and has no host synchronisation.

What differs, and where: rows are computed up to ``sync_every - 1`` steps past the point where the
last of them finished (their tokens are pad and are cut off before decoding, so the answers do not
change); on a GPU the inductor kernels and the attention over the whole static cache round
differently from eager ones in fp16/bf16, exactly as under ``static_compiled``, and so may the
decoding steps' fused q/k/v and gate/up products (:mod:`dyto.models.fused_projections`; the
modules' weights become views of one tensor per group, so nothing is copied and every other path
computes as before; on the CPU the tokens stay bitwise ``generate``'s). Greedy only (the
settings ``inner.loop`` refuses are refused here too, and ``VideoQA`` decodes those with Hugging
Face's ``generate``, saying so once); no sliding-window layers. The layers attend through
:func:`packed_gqa_attention` (grouped KV heads read as cached, also under compilation).

    from dyto.models.graphed_loop import GraphedLoop
    ids = GraphedLoop(backbone).generate_ids(inputs, generation_config)   # [B, n] new token ids
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import AttentionInterface, DynamicCache, GenerationConfig, StaticCache
from transformers.masking_utils import create_causal_mask

from dyto.models.fused_projections import fuse, fused_projections
from dyto.models.generation_loop import static_cache_length
from dyto.models.inner.attention import hooked_attention
from dyto.models.inner.loop import _OFF, _split, language_model
from dyto.models.rope import rope_fixed_under_limit, rope_is_fixed

__all__ = ["GraphedLoop", "SYNC_EVERY", "packed_gqa", "packed_gqa_attention", "unsupported"]

SYNC_EVERY = 8           # steps between the host's looks at whether every row finished
PACKED_GQA = "dyto_packed_gqa"  # the attention function the loop's layers run through
RECOMPILE_LIMIT = 64     # torch.compile shapes kept per process (group size x cache length)


def packed_gqa_attention(module, query, key, value, attention_mask, **kwargs):
    """SDPA for one decoding query with grouped KV heads, without copying the keys and values per head.

    transformers' ``sdpa_attention_forward`` packs a single query's G = heads / KV-heads query heads
    as G rows of their KV head (``pack_gqa``) when it runs eagerly, but under ``torch.compile`` it
    falls back to ``repeat_kv``, which writes the whole static cache out G times per layer and step
    (Qwen2.5-VL-7B, G = 7: ~16 GB a step for a group of 19 rows at 2048 positions, against 2.2 GB of
    cache). Here the packing is done under compilation too: query ``[B, H, 1, hd]`` as
    ``[B, KVH, G, hd]`` against keys ``[B, KVH, L, hd]``, the ``[B, 1, 1, L]`` mask broadcast, the
    same arithmetic per query head as the repeated keys. Anything else (a prefill, no grouping,
    another attention, a per-head mask) calls the module's own function unchanged."""
    groups = getattr(module, "num_key_value_groups", 1)
    b, h, q, d = query.shape
    plain = (module.dyto_impl_name != "sdpa" or groups == 1 or q != 1 or kwargs.get("dropout", 0.0)
             or kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None
             or (attention_mask is not None and attention_mask.shape[1] != 1))
    if plain:
        return module.dyto_impl(module, query, key, value, attention_mask, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query.reshape(b, h // groups, groups, d), key, value, attn_mask=attention_mask, scale=kwargs.get("scaling"))
    return out.reshape(b, h, 1, value.shape[-1]).transpose(1, 2).contiguous(), None     # [B, 1, H, hd]


AttentionInterface.register(PACKED_GQA, packed_gqa_attention)


def packed_gqa(model: torch.nn.Module):
    """Context: ``model``'s decoder layers attend through :func:`packed_gqa_attention` (also what
    ``VideoQA`` wraps ``static_compiled``'s ``generate`` in)."""
    return hooked_attention(language_model(model).layers, PACKED_GQA)


def unsupported(model: torch.nn.Module, config: GenerationConfig) -> str | None:
    """Why ``graphed`` cannot decode with ``config`` on ``model``; None when it can."""
    if config.do_sample or (config.num_beams or 1) != 1:
        return "it decodes greedily only (do_sample=False, num_beams=1)"
    on = [k for k, off in _OFF.items() if getattr(config, k, None) not in off]
    if on:
        return f"it does not implement the generation settings {on}"
    try:
        lm = language_model(model)
    except ValueError as e:
        return str(e)
    if any(t != "full_attention" for t in getattr(lm.config, "layer_types", None) or []):
        return "the model has sliding-window layers"
    return None


@dataclass
class _Buffers:
    """The device tensors a step reads and writes; fixed addresses for the whole group (a CUDA graph
    replays on exactly these)."""

    token: Tensor        # [B] long, the last chosen token
    positions: Tensor    # [B, 1] or [3|4, B, 1] long, the last token's position ids
    mask: Tensor         # [B, L] long, 1 = attend: the prompt's padding mask, then ones to the cache's end
    step: Tensor         # [] long, index of the token the next step chooses
    min_new: Tensor      # [] long, EOS is forbidden while step < min_new
    ids: Tensor          # [B, max_new] long, the chosen tokens
    unfinished: Tensor   # [B] long, 1 until the row chose EOS
    eos: Tensor          # [E] long, the EOS ids (may be empty)


@dataclass
class _Slot:
    """One group shape's static cache, buffers and step; kept while the next group has the same shape."""

    key: tuple           # (B, cache length, max_new, eos ids, pad, position rows, dtype, device, weights)
    buf: _Buffers
    cache: StaticCache
    stepper: object      # () -> None: one decoding step (a CUDA graph replay once captured)


class GraphedLoop:
    """Greedy generation of one batch of ``LLMInput`` (see the module docstring).

    ``compile`` / ``graph``: None = on CUDA only (what runs use); the CPU tests pass ``compile``
    as a ``torch.compile`` backend (``"eager"`` traces with TorchDynamo and runs the traced graph).
    ``fuse``: the decoding steps compute q/k/v and gate/up as one matrix product each
    (:mod:`dyto.models.fused_projections`; the prefill keeps the separate ones).
    """

    _compiled: dict = {}   # (backend, fullgraph) -> the compiled step, for the process (Dynamo keeps a graph per shape)

    def __init__(self, backbone, *, sync_every: int = SYNC_EVERY, compile: str | bool | None = None,
                 graph: bool | None = None, fullgraph: bool = True, fuse: bool = True):
        if sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every}")
        self.backbone, self.sync_every = backbone, sync_every
        self.model = backbone.model
        self.lm = language_model(self.model)
        self.layers = list(self.lm.layers)
        self.embed = self.model.get_input_embeddings()
        self.head = self.model.get_output_embeddings()
        cuda = backbone.device.type == "cuda"
        self.compile = ("inductor" if cuda else False) if compile is None else compile
        self.graph = cuda if graph is None else graph
        self.fullgraph, self.fuse = fullgraph, fuse
        self.notes: list[str] = []  # what fell back and why (VideoQA prints each once)
        self._slot: _Slot | None = None
        self.cache: StaticCache | None = None
        self.pad = 0
        self.steps_run = 0          # decoding steps of the last call (benchmarks, tests)

    # -- the greedy loop ---------------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(self, inputs: list, config: GenerationConfig, logits_processor=None) -> Tensor:
        """New token ids ``[B, n]``, ``n`` as ``generate`` would stop (all rows finished, or ``max_new_tokens``).

        ``logits_processor`` runs on the prefill's logits only (``FirstTokenTimer``: it must return them
        unchanged); every later step's choice happens on the device."""
        reason = unsupported(self.model, config)
        if reason:
            raise ValueError(f"generation_loop graphed: {reason}")
        with packed_gqa(self.model):
            return self._generate_rope(inputs, config, logits_processor)

    def _generate_rope(self, inputs: list, config: GenerationConfig, logits_processor) -> Tensor:
        if rope_is_fixed(self.model):
            return self._generate(inputs, config, logits_processor, fast=True)
        # dynamic RoPE: under its limit the frequencies cannot change (dyto.models.rope), so the step has
        # no data-dependent branch; past it the update must run, and the steps run uncompiled, ungraphed
        with rope_fixed_under_limit(self.model, max(i.span for i in inputs) + config.max_new_tokens) as fixed:
            if not fixed and (self.compile or self.graph):
                self._note("a sequence can pass the dynamic-RoPE limit; its steps run without compiler and graph")
            return self._generate(inputs, config, logits_processor, fast=fixed)

    def _note(self, line: str) -> None:
        if line not in self.notes:
            self.notes.append(line)

    def _generate(self, inputs: list, config: GenerationConfig, logits_processor, fast: bool) -> Tensor:
        embeds, mask, positions = self.backbone.llm_batch(inputs)
        b, s, _ = embeds.shape
        if positions is None:  # what generate derives from the mask
            positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        if self.fuse:
            fuse(self.model)   # before the slot's key: it changes the q/k/v and gate/up weights' addresses once
        slot = self._slot_for(config, embeds, positions)
        buf = slot.buf
        buf.mask[:, :s] = mask
        buf.mask[:, s:] = 1
        buf.positions.copy_(positions[..., -1:])
        buf.step.zero_()
        buf.min_new.fill_(config.min_new_tokens or 0)
        buf.ids.fill_(self.pad)
        buf.unfinished.fill_(1)
        self.backbone.before_generation()
        logits = self._prefill(inputs, embeds, positions)
        if logits_processor is not None:
            ids_so_far = torch.empty(b, 0, dtype=torch.long, device=embeds.device)
            if not torch.equal(logits_processor(ids_so_far, logits), logits):
                raise ValueError("generation_loop graphed: logits processors must leave the scores unchanged")
        self._choose(buf, logits)
        done, max_new = 1, buf.ids.shape[1]
        step = slot.stepper if fast else (lambda: self._step(buf))
        with fused_projections(self.model) if self.fuse else contextlib.nullcontext():
            while done < max_new:
                if done % self.sync_every == 0 and len(buf.eos) and not bool(buf.unfinished.any()):
                    break
                step()
                done += 1
        self.steps_run = done - 1
        return buf.ids[:, : self._length(buf.ids[:, :done], buf.eos)].clone()

    def _slot_for(self, config: GenerationConfig, embeds: Tensor, positions: Tensor) -> "_Slot":
        """The static cache, buffers and step (CUDA graph) of this group's shape: the last group's when
        the shape is the same (a graph is captured once per shape, and the cache cleared, not
        reallocated), else new ones, the old ones freed first (one cache at a time, as transformers)."""
        b, s, _ = embeds.shape
        device, max_new = embeds.device, config.max_new_tokens
        eos = config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else 0)
        # the weights' addresses too: a captured graph reads them where they were (a moved model needs a new one)
        weights = hash(tuple(p.data_ptr() for p in self.model.parameters()))
        key = (b, static_cache_length(s, max_new), max_new, tuple(eos), int(pad), tuple(positions.shape[:-2]),
               embeds.dtype, device, weights)
        if self._slot is not None and self._slot.key == key:
            self._slot.cache.reset()
            self.cache = self._slot.cache
            return self._slot
        self._slot = self.cache = None  # free the previous shape's cache and graph before allocating
        self.pad = int(pad)
        buf = _Buffers(token=torch.zeros(b, dtype=torch.long, device=device),
                       positions=torch.zeros(*positions.shape[:-1], 1, dtype=torch.long, device=device),
                       mask=torch.ones(b, key[1], dtype=torch.long, device=device),
                       step=torch.zeros((), dtype=torch.long, device=device),
                       min_new=torch.tensor(config.min_new_tokens or 0, device=device),
                       ids=torch.full((b, max_new), self.pad, dtype=torch.long, device=device),
                       unfinished=torch.ones(b, dtype=torch.long, device=device),
                       eos=torch.tensor(eos, dtype=torch.long, device=device))
        self.cache = StaticCache(config=self.lm.config, max_cache_len=key[1])
        self._slot = _Slot(key, buf, self.cache, self._stepper(buf))
        return self._slot

    @staticmethod
    def _length(ids: Tensor, eos: Tensor) -> int:
        """How many columns ``generate`` would have returned: up to the step where the last row chose EOS."""
        if not len(eos):
            return ids.shape[1]
        hit = torch.isin(ids, eos)                                      # [B, n]
        ends = torch.where(hit.any(1), hit.int().argmax(1) + 1, ids.shape[1])
        return int(ends.max())

    # -- prefill (eager, one row at a time, as batch-1 generate's) ----------------------------
    def _prefill(self, inputs: list, embeds: Tensor, positions: Tensor) -> Tensor:
        """Each row's prompt alone, as one question at a time computes it (no padding, no mask: causal
        attention over its own tokens, a dynamic cache), its keys and values then copied into the
        group's static cache at the row's left-padded columns. Returns ``[B, vocab]`` float32 logits."""
        b, s, _ = embeds.shape
        logits = []
        for row, inp in enumerate(inputs):
            pad = s - inp.length
            h, text_pos, rope_pos = embeds[row:row + 1, pad:], *_split(positions[..., row:row + 1, pad:])
            cache = DynamicCache(config=self.lm.config)
            hook = self.backbone.inner_hook([inp])
            cols = torch.arange(inp.length, device=embeds.device)[None]
            mask4d = create_causal_mask(config=self.lm.config, inputs_embeds=h, attention_mask=None, cache=cache,
                                        position_ids=text_pos)
            rope = self.lm.rotary_emb(h, rope_pos)
            for i, layer in enumerate(self.layers):
                h = layer(h, attention_mask=mask4d, position_embeddings=rope, position_ids=text_pos, cache=cache,
                          use_cache=True)
                if hook is not None:
                    h = hook(i, h, cols)
            logits.append(self._logits(h))
            for alone, static in zip(cache.layers, self.cache.layers):   # [1, KVH, S_row, hd] -> row, columns pad:s
                if not static.is_initialized:
                    static.lazy_initialization(alone.keys.expand(b, -1, -1, -1), alone.values.expand(b, -1, -1, -1))
                static.keys[row, :, pad:s] = alone.keys[0]
                static.values[row, :, pad:s] = alone.values[0]
        for static in self.cache.layers:
            static.cumulative_length.fill_(s)
        return torch.cat(logits)

    def _logits(self, h: Tensor) -> Tensor:
        """``[B, vocab]`` float32 logits of the last position, as generate takes them."""
        return self.head(self.lm.norm(h)[:, -1:, :])[:, -1].to(copy=True, dtype=torch.float32)

    # -- one decoding step: device tensors in, device tensors out ----------------------------
    def _choose(self, buf: _Buffers, logits: Tensor) -> None:
        """Greedy choice of token ``buf.step`` from ``logits [B, vocab]`` with generate's EOS rules."""
        if len(buf.eos):   # as MinNewTokensLengthLogitsProcessor, with the step on the device
            logits[:, buf.eos] = torch.where(buf.step < buf.min_new, float("-inf"), logits[:, buf.eos])
        token = logits.argmax(dim=-1)
        if len(buf.eos):
            token = token * buf.unfinished + self.pad * (1 - buf.unfinished)
            buf.unfinished.mul_((~torch.isin(token, buf.eos)).long())
        buf.ids.index_copy_(1, buf.step.view(1), token[:, None])
        buf.token.copy_(token)
        buf.step.add_(1)

    def _step(self, buf: _Buffers) -> None:
        h = self.embed(buf.token[:, None])                        # [B, 1, D]
        buf.positions.add_(1)
        text_pos, rope_pos = _split(buf.positions)
        mask4d = create_causal_mask(config=self.lm.config, inputs_embeds=h, attention_mask=buf.mask,
                                    cache=self.cache, position_ids=text_pos)
        rope = self.lm.rotary_emb(h, rope_pos)
        for layer in self.layers:
            h = layer(h, attention_mask=mask4d, position_embeddings=rope, position_ids=text_pos, cache=self.cache,
                      use_cache=True)
        self._choose(buf, self._logits(h))

    def _stepper(self, buf: _Buffers):
        """A callable doing one step: compiled and captured as a CUDA graph where asked, with one
        note per fallback (compilation or capture failing decodes with what worked)."""
        fn = self._step
        if self.compile:
            key = (self.compile, self.fullgraph)
            if key not in GraphedLoop._compiled:
                limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
                setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), RECOMPILE_LIMIT))
                GraphedLoop._compiled[key] = torch.compile(GraphedLoop._step, backend=self.compile,
                                                           fullgraph=self.fullgraph, dynamic=False)
            fn = self._compiled_or_eager(GraphedLoop._compiled[key])
        if not self.graph:
            return lambda: fn(buf)
        return _Graph(fn, buf, self._note).replay


    def _compiled_or_eager(self, compiled):
        """The compiled step; if its first call fails (compilation happens there, before any tensor is
        written), a note and the eager step for this call's remaining steps."""
        state = {"calls": 0, "eager": False}

        def fn(buf: _Buffers) -> None:
            state["calls"] += 1
            if state["eager"]:
                return self._step(buf)
            try:
                return compiled(self, buf)
            except Exception as e:  # noqa: BLE001 - a model the compiler cannot take still decodes
                if state["calls"] > 1:
                    raise
                state["eager"] = True
                self._note(f"torch.compile of the step failed ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                           "its steps run uncompiled")
                return self._step(buf)
        return fn


class _Graph:
    """One step as a CUDA graph: the first steps run as they are (compilation, cuBLAS and allocator
    warm-up, on a side stream as torch's docs ask; they are real steps), the next call captures
    (capturing runs nothing), and every call from then on replays. A failed capture is noted and
    the steps run without the graph."""

    WARM = 2

    def __init__(self, fn, buf: _Buffers, note):
        self.fn, self.buf, self.note = fn, buf, note
        self.calls, self.graph, self.failed = 0, None, False

    def replay(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        elif self.failed or self.calls < self.WARM:
            self._warm()
        else:
            self._capture()
        self.calls += 1

    def _warm(self) -> None:
        side, main = torch.cuda.Stream(), torch.cuda.current_stream()
        side.wait_stream(main)
        with torch.cuda.stream(side):
            self.fn(self.buf)
        main.wait_stream(side)

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # DataLoader threads may allocate
                self.fn(self.buf)
        except Exception as e:  # noqa: BLE001 - any capture failure: decode without the graph
            self.failed = True
            self.note(f"CUDA graph capture failed ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                              "decoding steps run without it")
            self._warm()
            return
        self.graph = graph
        graph.replay()  # capturing ran nothing: this is the step
