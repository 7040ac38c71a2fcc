"""Greedy prefill + decoding over a backbone's Hugging Face decoder layers, with an inner stage.

Hugging Face's ``generate`` derives each step's positions from the sequence it holds, so after an
inner stage shortened the sequence it would number the next tokens wrongly, and one forward pass
cannot change its length between layers. This loop does what ``generate`` does (the same input
tensors from ``Backbone.llm_batch``, the same mask builder, rotary embedding, decoder layers,
final norm, LM head on the last position, logits processors, greedy choice, EOS and padding
rules), calling the model's own modules, and in addition:

* keeps one KV cache whose layers may hold different tokens: before ``stage.prune_layer`` the
  whole sequence, from it on the kept tokens (all layers with ``cut_earlier``); each group of
  layers gets its own 2-D padding mask, extended by one column per decoding step;
* at ``stage.attention_layer`` reads the attention the stage needs (:class:`~.attention.Probe`:
  those query rows only, in float32; the layer itself still runs its SDPA), asks the stage per
  sequence what to keep, and continues on the kept rows, re-padded on the left, with their
  ORIGINAL positions (1-D ids, or the M-RoPE ``[3, S]`` (t, h, w) ids on Qwen2.5-VL); decoding
  continues the original positions (last prompt position + 1, ...), as ``generate`` would have;
* for a decode stage, reads the current token's attention at every step and restricts the KV
  entries that layers from ``prune_layer`` on read (:class:`~.attention.KeyView`);
* calls ``backbone.inner_hook(inputs)`` (if it returns one) after every prefill layer with the
  hidden states and, per current column, the ORIGINAL column it holds (-1 for padding): the place
  where a backbone that adds extra per-visual-token state inside the LLM (Qwen3-VL's DeepStack
  features) keeps indexing that state correctly after tokens were dropped (docs/internals.md).

With a stage that keeps every token the answers are bitwise those of ``model.generate``
(tests/test_inner_stages.py, every tiny backbone). Eager only: ``generation_loop:
static_compiled`` falls back to this loop (``VideoQA.resolved_generation_loop``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import DynamicCache, GenerationConfig
from transformers.masking_utils import create_causal_mask

from dyto.models.cost import LayerCounts
from dyto.models.inner.attention import KeyView, Probe, hooked_attention
from dyto.models.inner.base import InnerStage, Keep, RowView

__all__ = ["InnerLoop", "language_model"]


def language_model(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder (``.layers``, ``.norm``, ``.rotary_emb``, ``.config``) inside a vision-language model."""
    inner = getattr(model, "model", model)
    lm = getattr(inner, "language_model", None) or model.get_decoder()
    if not all(hasattr(lm, a) for a in ("layers", "norm", "rotary_emb")):
        raise ValueError(f"{type(model).__name__}: no decoder with layers, norm and rotary_emb found")
    return lm


@dataclass
class _Group:
    """Layers [start, end) whose caches hold the same columns."""

    start: int
    end: int
    mask: Tensor | None     # [B, C] 2-D padding mask (None: no padding, as generate drops an all-ones mask)
    cols: Tensor            # [B, C] original column of each cache entry (-1: padding)


# generation settings the loop does not implement, with the value that means "off"
_OFF = {"repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,),
        "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "min_length": (None, 0),
        "length_penalty": (None, 1.0), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,)}


def _check_greedy(config: GenerationConfig) -> None:
    """The loop is greedy decoding with ``max_new_tokens`` / ``min_new_tokens`` and EOS: refuse the rest."""
    if config.do_sample or (config.num_beams or 1) != 1:
        raise ValueError("inner stages decode greedily (do_sample=False, num_beams=1)")
    on = [k for k, off in _OFF.items() if getattr(config, k, None) not in off]
    if on:
        raise ValueError(f"inner stages do not implement the generation settings {on}")


def _split(positions: Tensor) -> tuple[Tensor | None, Tensor]:
    """(positions the mask and layers read, positions the rotary embedding reads), as the text models split them."""
    if positions.ndim == 3 and positions.shape[0] == 4:
        return positions[0], positions[1:]
    if positions.ndim == 3:
        return None, positions
    return positions, positions


class InnerLoop:
    """Greedy generation of one batch of ``LLMInput`` with ``stage`` (see the module docstring)."""

    def __init__(self, backbone, stage: InnerStage):
        self.backbone, self.stage = backbone, stage
        self.lm = language_model(backbone.model)
        self.layers = list(self.lm.layers)
        if any(t != "full_attention" for t in getattr(self.lm.config, "layer_types", None) or []):
            raise ValueError("inner stages need full-attention layers; this model has sliding-window layers")
        stage.check(len(self.layers))

    # -- the greedy loop ---------------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(self, inputs: list, config: GenerationConfig, logits_processor=None) -> Tensor:
        """New token ids ``[B, n]``; fills each input's ``counts`` (per-layer token counts)."""
        _check_greedy(config)
        embeds, mask, positions = self.backbone.llm_batch(inputs)
        if positions is None:  # what generate derives from the mask
            positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        self.rows = [self._row(b, inp, mask.shape[1]) for b, inp in enumerate(inputs)]
        self.hook = self.backbone.inner_hook(inputs)
        eos = config.eos_token_id
        eos = torch.tensor([eos] if isinstance(eos, int) else list(eos or []), device=embeds.device)
        pad = config.pad_token_id if config.pad_token_id is not None else (int(eos[0]) if len(eos) else 0)
        self.backbone.before_generation()
        with hooked_attention(self.layers):
            logits = self._prefill(embeds, None if bool(mask.all()) else mask, positions)
            for b, inp in enumerate(inputs):
                inp.counts = self.counts[b]
            ids = torch.empty(embeds.shape[0], 0, dtype=torch.long, device=embeds.device)
            unfinished = torch.ones(embeds.shape[0], dtype=torch.long, device=embeds.device)
            for step in range(config.max_new_tokens):
                if len(eos) and step < (config.min_new_tokens or 0):   # as MinNewTokensLengthLogitsProcessor
                    logits[:, eos] = float("-inf")
                scores = logits if logits_processor is None else logits_processor(ids, logits)
                token = scores.argmax(dim=-1)
                if len(eos):
                    token = token * unfinished + pad * (1 - unfinished)
                ids = torch.cat([ids, token[:, None]], dim=-1)
                if len(eos):
                    unfinished = unfinished & ~torch.isin(token, eos)
                if step + 1 == config.max_new_tokens or int(unfinished.max()) == 0:
                    break
                logits = self._decode(token)
        return ids

    def _row(self, b: int, inp, width: int) -> dict:
        pad = width - inp.length
        if inp.visual_span is None:
            raise ValueError(f"{type(self.backbone).__name__}.build_input set no visual_span; inner stages need it")
        start, end = inp.visual_span
        rows = torch.arange(start, end) if inp.visual_rows is None else inp.visual_rows.cpu()
        blocks = list(inp.blocks) if inp.blocks is not None else [len(rows)]
        return {"pad": pad, "length": inp.length, "visual": rows + pad, "end": end + pad, "blocks": blocks}

    # -- prefill -----------------------------------------------------------------------------
    def _prefill(self, embeds: Tensor, mask: Tensor | None, positions: Tensor) -> Tensor:
        lm, stage = self.lm, self.stage
        b, s, _ = embeds.shape
        self.cache = DynamicCache(config=lm.config)
        cols = torch.arange(s, device=embeds.device).expand(b, s).clone()
        for i, r in enumerate(self.rows):
            cols[i, : r["pad"]] = -1
        self.groups = [_Group(0, len(self.layers), mask, cols)]
        self.last_positions = positions[..., -1:]
        tokens = [[r["length"]] * len(self.layers) for r in self.rows]
        visual = [[len(r["visual"])] * len(self.layers) for r in self.rows]
        h, text_pos, rope_pos = embeds, *_split(positions)
        mask4d = create_causal_mask(config=lm.config, inputs_embeds=h, attention_mask=mask, cache=self.cache,
                                    position_ids=text_pos)
        rope = lm.rotary_emb(h, rope_pos)
        for i, layer in enumerate(self.layers):
            probe = None
            if stage.phase == "prefill" and i == stage.attention_layer:
                probe = Probe(first=self._query_first(h.shape[1]))
                layer.self_attn.dyto_hook = probe
            h = layer(h, attention_mask=mask4d, position_embeddings=rope, position_ids=text_pos, cache=self.cache,
                      use_cache=True)
            layer.self_attn.dyto_hook = None
            if self.hook is not None:
                h = self.hook(i, h, self.groups[-1].cols)
            if probe is not None:
                h, positions, kept = self._prune(h, positions, probe)
                text_pos, rope_pos = _split(positions)
                mask4d = create_causal_mask(config=lm.config, inputs_embeds=h, attention_mask=self.groups[-1].mask,
                                            cache=self.cache, position_ids=text_pos, layer_idx=stage.prune_layer)
                rope = lm.rotary_emb(h, rope_pos)
                for row, n in enumerate(kept):
                    tokens[row][stage.prune_layer:] = [n[0]] * (len(self.layers) - stage.prune_layer)
                    visual[row][stage.prune_layer:] = [n[1]] * (len(self.layers) - stage.prune_layer)
        self.counts = []
        for row in range(b):
            kv = [int((g.cols[row] >= 0).sum()) for g in self.groups for _ in range(g.start, g.end)]
            self.counts.append(LayerCounts(tokens[row], kv, visual[row]))
        return self._logits(h)

    def _query_first(self, width: int) -> int:
        if self.stage.queries == "last":
            return width - 1
        return min(r["end"] for r in self.rows) if any(r["end"] < width for r in self.rows) else width - 1

    def _query_cols(self, r: dict, width: int) -> Tensor:
        start = r["end"] if self.stage.queries == "after_visual" and r["end"] < width else width - 1
        return torch.arange(start, width)

    def _prune(self, h: Tensor, positions: Tensor, probe: Probe):
        """Ask the stage per row, then gather the kept rows (re-padded on the left)."""
        stage, group = self.stage, self.groups[-1]
        b, s, d = h.shape
        keeps, kept = [], []
        for row, r in enumerate(self.rows):
            valid = torch.arange(r["pad"], s)
            attention = probe.row_attention(row, self._query_cols(r, s).to(h.device), valid.to(h.device))
            visual_in_valid = (r["visual"] - r["pad"]).to(h.device)
            view = RowView(attention=attention[:, :, visual_in_valid], hidden=h[row, r["visual"].to(h.device)],
                           blocks=r["blocks"])
            keep = stage.select(view) if len(r["visual"]) else Keep(torch.empty(0, dtype=torch.long, device=h.device))
            keep_cols = r["visual"].to(h.device)[keep.index]
            is_visual = torch.zeros(s, dtype=torch.bool, device=h.device)
            is_visual[r["visual"].to(h.device)] = True
            is_visual[keep_cols] = False                                    # kept visual columns stay
            cols = valid.to(h.device)[~is_visual[r["pad"]:]]                # [n'] ascending
            keeps.append((cols, keep_cols, keep.hidden))
            kept.append((len(cols), len(keep.index)))
        width = max(len(c) for c, _, _ in keeps)
        new_h = h.new_zeros(b, width, d)
        new_pos = positions.new_zeros(*positions.shape[:-1], width)
        new_cols = torch.full((b, width), -1, dtype=torch.long, device=h.device)
        for row, (cols, keep_cols, hidden) in enumerate(keeps):
            at = width - len(cols)
            new_h[row, at:] = h[row, cols]
            if hidden is not None:
                new_h[row, at + torch.searchsorted(cols, keep_cols)] = hidden.to(h.dtype)
            new_pos[..., row, at:] = positions[..., row, cols]
            new_cols[row, at:] = group.cols[row, cols]
        new_mask = None if bool((new_cols >= 0).all()) else (new_cols >= 0).long()
        if stage.cut_earlier:
            self._cut_cache(range(0, stage.prune_layer), keeps, width)
            self.groups = [_Group(0, len(self.layers), new_mask, new_cols)]
        else:
            self.groups = [_Group(0, stage.prune_layer, group.mask, group.cols),
                           _Group(stage.prune_layer, len(self.layers), new_mask, new_cols)]
        return new_h, new_pos, kept

    def _cut_cache(self, layers, keeps, width: int) -> None:
        for i in layers:
            layer = self.cache.layers[i]
            for name in ("keys", "values"):
                old = getattr(layer, name)                                    # [B, KVH, S, hd]
                new = old.new_zeros(*old.shape[:2], width, old.shape[-1])
                for row, (cols, _, _) in enumerate(keeps):
                    new[row, :, width - len(cols):] = old[row, :, cols]
                setattr(layer, name, new)

    # -- decoding ----------------------------------------------------------------------------
    def _decode(self, token: Tensor) -> Tensor:
        lm, stage = self.lm, self.stage
        h = self.backbone.model.get_input_embeddings()(token[:, None])
        self.last_positions = self.last_positions + 1
        text_pos, rope_pos = _split(self.last_positions)
        masks = []
        for g in self.groups:
            g.mask = None if g.mask is None else torch.cat([g.mask, g.mask.new_ones(g.mask.shape[0], 1)], dim=-1)
            masks.append(create_causal_mask(config=lm.config, inputs_embeds=h, attention_mask=g.mask,
                                            cache=self.cache, position_ids=text_pos, layer_idx=g.start))
        rope = lm.rotary_emb(h, rope_pos)
        view = None
        for i, layer in enumerate(self.layers):
            gi = next(k for k, g in enumerate(self.groups) if g.start <= i < g.end)
            probe = None
            if stage.phase == "decode" and i == stage.attention_layer:
                probe = Probe(first=0)
                layer.self_attn.dyto_hook = probe
            elif view is not None and i >= stage.prune_layer:
                layer.self_attn.dyto_hook = view
            h = layer(h, attention_mask=masks[gi], position_embeddings=rope, position_ids=text_pos, cache=self.cache,
                      use_cache=True)
            layer.self_attn.dyto_hook = None
            if probe is not None:
                view = self._step_view(probe, self.groups[gi])
        for g in self.groups:
            g.cols = torch.cat([g.cols, g.cols.new_full((g.cols.shape[0], 1), int(g.cols.max()) + 1)], dim=-1)
        return self._logits(h)

    def _step_view(self, probe: Probe, group: _Group) -> KeyView | None:
        """The KV columns (this step's token included) layers >= prune_layer read; None = all, as without a stage."""
        cols = torch.cat([group.cols, group.cols.new_full((group.cols.shape[0], 1), int(group.cols.max()) + 1)], -1)
        now = cols.shape[1] - 1
        picks, any_cut = [], False
        for row, r in enumerate(self.rows):
            valid = torch.nonzero(cols[row] >= 0).flatten()
            visual = torch.nonzero(torch.isin(cols[row], r["visual"].to(cols.device))).flatten()
            if len(visual) == 0:
                picks.append(valid)
                continue
            attention = probe.row_attention(row, torch.tensor([now], device=cols.device), valid)  # [H, 1, K]
            view = RowView(attention=attention[:, :, torch.searchsorted(valid, visual)], hidden=None,
                           blocks=r["blocks"], state=r.setdefault("state", {}))
            index = self.stage.select_step(view)
            if index is None or len(index) == len(visual):
                picks.append(valid)
                continue
            any_cut = True
            keep = cols[row] >= 0
            keep[visual] = False
            keep[visual[index.to(cols.device)]] = True
            picks.append(torch.nonzero(keep).flatten())
        if not any_cut:
            return None
        width = max(len(p) for p in picks)
        index = torch.zeros(len(picks), width, dtype=torch.long, device=cols.device)
        valid = torch.zeros(len(picks), width, dtype=torch.bool, device=cols.device)
        for row, p in enumerate(picks):
            index[row, : len(p)], valid[row, : len(p)] = p, True
        return KeyView(index, valid)

    def _logits(self, h: Tensor) -> Tensor:
        """``[B, vocab]`` float32 logits of the last position, as generate takes them."""
        h = self.lm.norm(h)
        return self.backbone.model.get_output_embeddings()(h[:, -1:, :])[:, -1].to(copy=True, dtype=torch.float32)
