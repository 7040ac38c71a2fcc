"""The tiny RANDOM-WEIGHT LLaVA-NeXT: shapes, determinism, save/reload through from_pretrained."""

import torch
from transformers import AutoTokenizer, LlavaNextForConditionalGeneration

from dyto.models.tiny import RANDOM_WEIGHTS_FLAG, TINY_MODEL_NAME, build_tiny_llava_next, save_tiny


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_shapes_and_labels():
    model, tok = build_tiny_llava_next()
    cfg = model.config
    assert cfg.vision_config.hidden_size == 32 and cfg.vision_config.num_hidden_layers == 2
    assert cfg.text_config.hidden_size == 64 and cfg.text_config.hidden_size % 16 == 0
    assert cfg.vision_feature_layer == -2
    assert cfg.image_token_index == tok.convert_tokens_to_ids("<image>")
    assert getattr(cfg, RANDOM_WEIGHTS_FLAG) is True and "random weights" in TINY_MODEL_NAME
    frames = torch.randn(3, 3, 56, 56)
    hidden = model.model.vision_tower(frames, output_hidden_states=True).hidden_states[-2]
    assert hidden.shape == (3, 1 + 16, 32)  # CLS + 4x4 patches
    assert model.model.multi_modal_projector(hidden[:, 1:]).shape == (3, 16, 64)


def test_tokenizer_bos_once_per_encode_and_pad():
    _, tok = build_tiny_llava_next()
    ids = tok("hello video").input_ids
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert tok.decode(tok("Ünïcødé ✓").input_ids, skip_special_tokens=True) == "Ünïcødé ✓"


def test_deterministic_for_a_seed():
    (m1, t1), (m2, t2), (m3, _) = build_tiny_llava_next(0), build_tiny_llava_next(0), build_tiny_llava_next(1)
    assert t1.get_vocab() == t2.get_vocab()
    assert _same_weights(m1, m2) and not _same_weights(m1, m3)
    rng_before = torch.random.get_rng_state()
    build_tiny_llava_next(5)
    assert torch.equal(rng_before, torch.random.get_rng_state())  # the global RNG is untouched


def test_rope_scaling_factor_makes_rope_dynamic():
    model, _ = build_tiny_llava_next(rope_scaling_factor=2.0)
    assert model.model.language_model.rotary_emb.rope_type == "dynamic"
    assert model.config.text_config.rope_parameters["factor"] == 2.0


def test_save_and_from_pretrained(tmp_path):
    save_tiny(tmp_path, seed=3)
    model, tok = build_tiny_llava_next(seed=3)
    loaded = LlavaNextForConditionalGeneration.from_pretrained(tmp_path)
    assert _same_weights(model, loaded) and getattr(loaded.config, RANDOM_WEIGHTS_FLAG)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    text = "USER: <image>\nThe input consists of key frames."
    assert tok2(text).input_ids == tok(text).input_ids


def test_checkpoints_load_onto_the_ranks_own_gpu(monkeypatch):
    import torch

    from dyto.models.loading import load_device_map

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_device_map() is None  # CPU: the usual from_pretrained path
    # no GPU here: the hardware query is replaced to check which device each DDP rank would use
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "6")
    assert load_device_map() == {"": torch.device("cuda", 2)}
    monkeypatch.delenv("LOCAL_RANK")
    assert load_device_map() == {"": torch.device("cuda", 0)}
