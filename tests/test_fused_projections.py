"""dyto/models/fused_projections.py on the tiny RANDOM-WEIGHT models, on the CPU: the weights become
views of one tensor per group (no copy kept, every other path unchanged bitwise), the graphed
loop's compiled step then runs 4 matrix products a layer instead of 7 with generate's tokens, the
modules come back after the block, and a dtype move that breaks the views is noticed and re-fused."""

from __future__ import annotations

import pytest
import torch

from dyto.models.backbone import list_backbones
from dyto.models.fused_projections import fuse, fused_projections
from dyto.models.graphed_loop import GraphedLoop
from dyto.models.inner import language_model
from test_graphed_loop import generate_ids, inputs_for


def storage_bytes(model: torch.nn.Module) -> int:
    seen = {}
    for p in model.parameters():
        seen[p.untyped_storage().data_ptr()] = p.untyped_storage().nbytes()
    return sum(seen.values())


@pytest.mark.parametrize("name", list_backbones())
def test_fusing_keeps_every_value_and_every_byte(one_thread, name):
    b, inputs, config = inputs_for(name, new_tokens=6)
    before, bytes_before = generate_ids(b, inputs, config), storage_bytes(b.model)
    layers = language_model(b.model).layers
    q, k, v = (layers[0].self_attn.q_proj, layers[0].self_attn.k_proj, layers[0].self_attn.v_proj)
    weights = [m.weight.detach().clone() for m in (q, k, v)]
    groups = fuse(b.model)
    assert len(groups) == 2 * len(layers)                     # q/k/v and gate/up in every layer
    assert all(torch.equal(m.weight, w) for m, w in zip((q, k, v), weights))
    rows = q.weight.shape[0]
    assert k.weight.data_ptr() == q.weight.data_ptr() + rows * q.weight.stride(0) * q.weight.element_size()
    assert storage_bytes(b.model) == bytes_before              # the old tensors are gone, none copied
    assert torch.equal(generate_ids(b, inputs, config), before)
    assert fuse(b.model) is groups                             # made once


@pytest.mark.parametrize("name", ["llava_next", "qwen2_5_vl", "qwen3_vl"])
def test_the_graphed_step_runs_four_products_a_layer(one_thread, name):
    b, inputs, config = inputs_for(name)
    layers = language_model(b.model).layers
    want = generate_ids(b, inputs, config)
    products: dict[bool, list[int]] = {}
    for fused in (False, True):
        torch._dynamo.reset()
        GraphedLoop._compiled.clear()
        counted: list[int] = []

        def backend(gm, example_inputs):
            counted.append(sum(node.op == "call_function" and "linear" in str(node.target) for node in gm.graph.nodes))
            return gm.forward

        assert torch.equal(GraphedLoop(b, compile=backend, fuse=fused).generate_ids(inputs, config), want)
        products[fused] = counted
    assert products == {False: [7 * len(layers) + 1], True: [4 * len(layers) + 1]}  # + the LM head
    attn = layers[0].self_attn
    assert isinstance(attn.q_proj, torch.nn.Linear) and isinstance(layers[0].mlp.up_proj, torch.nn.Linear)


def test_a_dtype_move_is_noticed_and_fused_again(one_thread):
    b, inputs, config = inputs_for("qwen2_5_vl", new_tokens=6)
    groups = fuse(b.model)
    b.model.to(torch.float64)                                  # every parameter replaced on its own
    assert not groups[0][2].intact()
    again = fuse(b.model)
    assert again is not groups and all(p.intact() for _, _, p in again)
    assert again[0][2].weight.dtype == torch.float64
    b.model.to(torch.float32)
    loop = GraphedLoop(b)
    with fused_projections(b.model):
        assert type(language_model(b.model).layers[0].self_attn.k_proj).__name__ == "_Part"
    assert torch.equal(loop.generate_ids(inputs, config), generate_ids(b, inputs, config))


def test_a_layer_with_another_kind_of_linear_is_left_alone(one_thread):
    """A subclass of nn.Linear (what a quantised linear is) is not fused: its weight is not a plain matrix."""
    b, inputs, config = inputs_for("llava_next", new_tokens=6)
    want = generate_ids(b, inputs, config)

    class OtherLinear(torch.nn.Linear):
        pass

    attn = language_model(b.model).layers[0].self_attn
    other = OtherLinear(attn.k_proj.in_features, attn.k_proj.out_features, bias=attn.k_proj.bias is not None)
    other.load_state_dict(attn.k_proj.state_dict())
    assert len(fuse(b.model)) == 2 * len(language_model(b.model).layers)
    attn.k_proj = other                                        # replaced after fusing: noticed, made again
    groups = fuse(b.model)
    assert len(groups) == 2 * len(language_model(b.model).layers) - 1
    assert all(other is not m for _, _, p in groups for m in p.modules)
    assert torch.equal(GraphedLoop(b).generate_ids(inputs, config), want)
