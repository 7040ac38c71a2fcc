"""One matrix product for a decoder layer's q/k/v projections, and one for its gate/up projections.

At batch 1 a decoding step is a chain of matrix-vector products, bound by reading the weights. On
an H200 (benchmarks/results/gpu_check_h200_2026-12-04) LLaVA-NeXT-7B's 32 MB q, k, v and o
products ran at ~2.2 TB/s, its 90 MB gate and up products at ~3.7 TB/s: small products do not
reach the bandwidth. Reading q, k and v (and gate and up) as one matrix makes each product as
large as the bigger ones.

No weight is copied for it: :func:`fuse` concatenates each group once into one tensor and makes
the modules' own weights (and biases) views of it, so every other path (the prefill, Hugging
Face's ``generate``) computes with the same values and the same matrix products as before.
:func:`fused_projections` then swaps, for the duration of a ``with`` block, each group's modules
for parts of one product: the first part (q_proj, gate_proj) computes the whole product and
splits it, the others return their slice of that split. The decoder layers call their
projections in that order, on the same input, as Llama, Qwen2, Qwen2.5-VL and Qwen3-VL's text
models do. A layer whose modules are missing, biased differently or of different input width is
left as it is.

    with fused_projections(model):      # GraphedLoop's decoding steps
        ...
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from dyto.models.inner.loop import language_model

__all__ = ["GROUPS", "fuse", "fused_projections"]

GROUPS = (("self_attn", ("q_proj", "k_proj", "v_proj")), ("mlp", ("gate_proj", "up_proj")))


class _Product:
    """One group's fused weight ``[sum of outputs, in]`` (and bias), and the last product's split."""

    def __init__(self, modules: list[torch.nn.Linear]):
        self.modules = modules
        self.sizes = [m.weight.shape[0] for m in modules]
        with torch.no_grad():
            self.weight = torch.cat([m.weight for m in modules])
            self.bias = None if modules[0].bias is None else torch.cat([m.bias for m in modules])
        start = 0
        for m, n in zip(modules, self.sizes):     # the modules' weights become views: no copy is kept
            m.weight = torch.nn.Parameter(self.weight[start:start + n], requires_grad=m.weight.requires_grad)
            if self.bias is not None:
                m.bias = torch.nn.Parameter(self.bias[start:start + n], requires_grad=m.bias.requires_grad)
            start += n
        self.split: tuple[Tensor, ...] = ()
        self.parts = [_Part(self, i) for i in range(len(modules))]   # the same objects every time: no recompiling

    def intact(self) -> bool:
        """Whether the modules still view this weight (``model.to(...)`` replaces parameters one by one)."""
        start = 0
        for m, n in zip(self.modules, self.sizes):
            if m.weight.data_ptr() != self.weight[start].data_ptr() or m.weight.shape[0] != n:
                return False
            start += n
        return True


class _Part(torch.nn.Module):
    """Stands in for module ``index`` of a fused group: the first computes the product."""

    def __init__(self, product: _Product, index: int):
        super().__init__()
        self.product, self.index = product, index

    def forward(self, x: Tensor) -> Tensor:
        p = self.product
        if self.index == 0:
            p.split = F.linear(x, p.weight, p.bias).split(p.sizes, dim=-1)   # [..., q | k | v]
        return p.split[self.index]


def _fusable(modules: list) -> bool:
    if not all(type(m) is torch.nn.Linear for m in modules):  # not a subclass (a quantised linear)
        return False
    first = modules[0]
    return all(m.in_features == first.in_features and (m.bias is None) == (first.bias is None)
               and m.weight.dtype == first.weight.dtype and m.weight.device == first.weight.device for m in modules)


def fuse(model: torch.nn.Module) -> list[tuple[torch.nn.Module, tuple[str, ...], _Product]]:
    """The fused groups of ``model``'s decoder layers, made once (kept on the model) and remade when a
    device or dtype move broke the views or a module was replaced. ``(parent module, names, product)`` per group."""
    groups = model.__dict__.get("_dyto_fused")
    if groups is not None and all(p.intact() and all(getattr(parent, n) is m for n, m in zip(names, p.modules))
                                  for parent, names, p in groups):
        return groups
    groups = []
    for layer in language_model(model).layers:
        for parent_name, names in GROUPS:
            parent = getattr(layer, parent_name, None)
            modules = [getattr(parent, n, None) for n in names]
            if parent is not None and _fusable(modules):
                groups.append((parent, names, _Product(modules)))
    model.__dict__["_dyto_fused"] = groups
    return groups


@contextmanager
def fused_projections(model: torch.nn.Module):
    """Within the block, each fused group of ``model`` runs as one matrix product (then put back)."""
    groups = fuse(model)
    for parent, names, product in groups:
        for i, name in enumerate(names):
            parent._modules[name] = product.parts[i]
    try:
        yield
    finally:
        for parent, names, product in groups:
            for name, module in zip(names, product.modules):
                parent._modules[name] = module
