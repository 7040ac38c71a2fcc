"""Which input tokens made each output token, and how: the reducer's keep/merge assignment.

A reducer's output token is a channel-wise function of some of its input tokens: a copy (kept
token), a weighted sum (a mean, a pool window, HoliTom's and Tango's beta merge, DyTo's ``mean``
and ``sum`` modes), or an element-wise max (DyTo's default ``amax`` merge, SlowFast's slow
pathway). An :class:`Assignment` records that function as a sparse table, so the SAME keep/merge
can be applied to any other per-token tensor on the same ``[T, N]`` grid: Qwen3-VL's DeepStack
features (three vision layers whose merged tokens are added to the first LLM layers' hidden
states at the visual positions) follow the main features through every reducer this way
(docs/internals.md, "Reductions with extra per-token tensors").

    out[l] = sum_j weights[j] * x[sources[j]]     over the entries j with rows[j] == l, or
    out[l] = max_j x[sources[j]]                   (element-wise) where amax[l]

``sources`` index the flattened input grid: frame t, cell n -> ``t * N + n``. A kept token is
one entry of weight 1; a token that is a mean of k inputs has k entries of weight 1/k. Nothing
here looks at the values: every decision (which tokens, which clusters) is the reducer's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Assignment"]


@dataclass
class Assignment:
    """Sparse keep/merge table of one reduction (see the module docstring).

    rows, sources [M] long and weights [M] float32 are parallel; amax [L] bool marks the output
    tokens that are element-wise maxima of their sources (their weights are ignored). Every
    output token has at least one entry.
    """

    rows: Tensor      # [M] long: the output token each entry feeds
    sources: Tensor   # [M] long: flat input index t * N + n
    weights: Tensor   # [M] float32: weight of the entry in its row's weighted sum
    amax: Tensor      # [L] bool: row is an element-wise max of its sources instead

    @property
    def size(self) -> int:
        """L, the number of output tokens."""
        return int(self.amax.shape[0])

    @classmethod
    def select(cls, sources: Tensor) -> "Assignment":
        """Each output token l is the input token ``sources[l]`` (kept as it is)."""
        sources = torch.as_tensor(sources).long().reshape(-1)
        n = sources.shape[0]
        return cls(torch.arange(n, device=sources.device), sources,
                   torch.ones(n, device=sources.device), torch.zeros(n, dtype=torch.bool, device=sources.device))

    @classmethod
    def groups(cls, members: Tensor, weights: Tensor | None = None, amax: bool = False) -> "Assignment":
        """Output token l combines ``members[l]`` ([L, K] flat input indices, -1 pads): a weighted
        sum with ``weights`` [L, K] (None: the mean of the members), or their max with ``amax``."""
        members = torch.as_tensor(members).long()
        valid = members >= 0
        rows = torch.arange(members.shape[0], device=members.device)[:, None].expand_as(members)
        if weights is None:
            weights = valid.float() / valid.sum(dim=1, keepdim=True).clamp(min=1).float()
        return cls(rows[valid], members[valid], weights.float()[valid],
                   torch.full((members.shape[0],), bool(amax), device=members.device))

    @classmethod
    def mapped(cls, row: Tensor, weight: Tensor, sources: Tensor, block: int, amax: bool = False) -> "Assignment":
        """Every input token in exactly one output: per block b (``block`` outputs each), input j of
        flat index ``sources[b, j]`` goes to output ``row[b, j]`` with ``weight[b, j]``; rows block-major."""
        rows = (torch.arange(row.shape[0], device=row.device)[:, None] * block + row).reshape(-1)
        return cls(rows, sources.reshape(-1).long(), weight.reshape(-1).float(),
                   torch.full((row.shape[0] * block,), bool(amax), device=row.device))

    @classmethod
    def cat(cls, parts: list["Assignment"]) -> "Assignment":
        """The assignments of consecutive output blocks, in order (row ids shifted)."""
        rows, offset = [], 0
        for part in parts:
            rows.append(part.rows + offset)
            offset += part.size
        return cls(torch.cat(rows), torch.cat([p.sources for p in parts]),
                   torch.cat([p.weights for p in parts]), torch.cat([p.amax for p in parts]))

    def to(self, device) -> "Assignment":
        return Assignment(self.rows.to(device), self.sources.to(device), self.weights.to(device),
                          self.amax.to(device))

    def shifted(self, offset: int) -> "Assignment":
        """The same table with every source index moved by ``offset`` (a sub-grid's frames)."""
        return Assignment(self.rows, self.sources + offset, self.weights, self.amax)

    def compose(self, inner: "Assignment") -> "Assignment":
        """``self`` applied to the OUTPUT of ``inner`` (a second stage), as one table on inner's input.

        Weighted sums compose linearly and a max of maxima is a max over the union; a copy (one
        entry of weight 1) composes with either. A max over a weighted sum (or a weighted sum of
        maxima) is not one table: ValueError.
        """
        counts = torch.bincount(inner.rows, minlength=inner.size)
        copy = (counts == 1) & (torch.zeros(inner.size, device=counts.device)
                                .index_add_(0, inner.rows, inner.weights.float()) == 1)   # [L_inner]
        outer_counts = torch.bincount(self.rows, minlength=self.size)
        outer_copy = (outer_counts == 1) & (torch.zeros(self.size, device=counts.device)
                                            .index_add_(0, self.rows, self.weights.float()) == 1)
        row_max = self.amax[self.rows] & ~outer_copy[self.rows]        # outer entry in a max row
        row_sum = ~self.amax[self.rows] & ~outer_copy[self.rows]
        src_max, src_copy = inner.amax[self.sources], copy[self.sources]
        if bool((row_max & ~src_max & ~src_copy).any()) or bool((row_sum & src_max & ~src_copy).any()):
            raise ValueError("cannot compose a max with a weighted sum into one assignment")
        # expand every outer entry into the entries of the inner row it reads
        order = torch.argsort(inner.rows, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        per = counts[self.sources]
        outer = torch.repeat_interleave(torch.arange(len(self.sources), device=per.device), per)
        within = torch.arange(len(outer), device=per.device) - torch.repeat_interleave(torch.cumsum(per, 0) - per, per)
        picked = order[starts[self.sources[outer]] + within]            # inner entry ids
        # a copy of a max row is a max row
        amax = self.amax | (outer_copy & torch.zeros(self.size, dtype=torch.bool, device=per.device)
                            .index_fill_(0, self.rows[src_max], True))
        return Assignment(self.rows[outer], inner.sources[picked], self.weights[outer] * inner.weights[picked], amax)

    def apply(self, x: Tensor) -> Tensor:
        """``x`` [T, N, E] (or [T*N, E]) on the reducer's input grid -> [L, E], in x's dtype.

        Copies and maxima are exact in every dtype (a pure selection is one ``index_select``);
        weighted sums accumulate in float32 (float64 input stays float64).
        """
        flat = x.reshape(-1, x.shape[-1])
        device = flat.device
        rows, sources, amax = self.rows.to(device), self.sources.to(device), self.amax.to(device)
        if (len(rows) == self.size and not bool(amax.any()) and bool((self.weights == 1).all())
                and torch.equal(rows, torch.arange(self.size, device=device))):
            if len(sources) == len(flat) and torch.equal(sources, torch.arange(len(flat), device=device)):
                return flat                                                      # every token, in order
            return flat.index_select(0, sources)                                 # kept tokens only
        out = torch.zeros(self.size, flat.shape[1], dtype=flat.dtype, device=device)
        is_max = amax[rows]
        if bool(is_max.any()):          # element-wise maxima, in x's dtype
            with warnings.catch_warnings():  # PyTorch labels index_reduce_ beta; its result is tested
                warnings.filterwarnings("ignore", message=r"index_reduce\(\) is in beta")
                out.index_reduce_(0, rows[is_max], flat.index_select(0, sources[is_max]), "amax", include_self=False)
        summed = ~is_max
        if bool(summed.any()):          # weighted sums, accumulated wide
            wide = torch.float64 if flat.dtype == torch.float64 else torch.float32
            values = flat.index_select(0, sources[summed]).to(wide) * self.weights.to(device, wide)[summed, None]
            total = torch.zeros(self.size, flat.shape[1], dtype=wide, device=device).index_add_(0, rows[summed], values)
            out = torch.where(amax[:, None], out, total.to(flat.dtype))
        return out
