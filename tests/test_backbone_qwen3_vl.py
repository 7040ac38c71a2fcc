"""The Qwen3-VL backbone on the tiny RANDOM-WEIGHT model (real transformers classes, real clips).

The expected side is built by the model's and the processor's own code: ``Qwen3VLProcessor`` (its
timestamps, its ``<|vision_start|>...<|vision_end|>`` per temporal patch, its patchify) on the frames
dyto preprocessed, then ``model.generate`` (which computes its own M-RoPE ids with ``get_rope_index``
and adds the DeepStack features itself). With ``concat`` the backbone's path must give the same
features, the same sequence and ids, and the same greedy tokens, bitwise on the CPU.
"""

from pathlib import Path

import pytest
import torch
from transformers import Qwen3VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor
from transformers.processing_utils import ProcessorMixin
from transformers.video_utils import VideoMetadata

from dyto.datamodules.video import decode_video
from dyto.errors import ConfigError
from dyto.models.qwen3_vl import Qwen3_VL, Qwen3Input
from dyto.models.qwen3_vl_inputs import VideoLayout, patch_timestamps
from dyto.models.videoqa import VideoQA
from dyto.reduction import ConcatReducer, DyToReducer, VCastReducer

DEMO = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo"
NEW = 10
WRAP = "<|vision_start|><|video_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def backbone(one_thread):
    return Qwen3_VL("tiny")


@pytest.fixture(scope="module")
def processor(backbone):
    """The real Qwen3VLProcessor around the tiny tokenizer. Its constructor's class check looks the
    video processor up in a table that is empty without torchvision, so that one check is skipped;
    with do_convert_rgb / do_resize / do_rescale / do_normalize off nothing else needs torchvision."""
    check = ProcessorMixin.check_argument_for_proper_class
    ProcessorMixin.check_argument_for_proper_class = lambda self, name, arg: None
    try:
        return Qwen3VLProcessor(image_processor=Qwen2VLImageProcessorPil(patch_size=16, merge_size=2),
                                tokenizer=backbone.tokenizer,
                                video_processor=Qwen3VLVideoProcessor(patch_size=16, temporal_patch_size=2,
                                                                      merge_size=2))
    finally:
        ProcessorMixin.check_argument_for_proper_class = check


def greedy(backbone):
    config = backbone.generation_defaults()
    config.update(do_sample=False, num_beams=1, max_new_tokens=NEW, use_cache=True)
    return config


def clip(backbone, name, frames):
    video = decode_video(str(DEMO / name), frames)
    return video, backbone.preprocessing(video.frames)


def processor_inputs(processor, backbone, prompt, video, pixels):
    """What the processor makes of the chat text and dyto's frames, with the video's real times."""
    text = prompt.before.removesuffix("<|vision_start|>") + WRAP + prompt.after.removeprefix("<|vision_end|>")
    meta = VideoMetadata(total_num_frames=video.total_frames, fps=video.fps, frames_indices=list(video.indices))
    return processor(text=[text], videos=[pixels], return_tensors="pt", videos_kwargs=dict(
        do_convert_rgb=False, do_resize=False, do_rescale=False, do_normalize=False, do_sample_frames=False,
        video_metadata=[meta], cap_pixels_per_frame=False))


def backbone_input(backbone, prompt, video, pixels, reducer):
    feats = backbone.encode(pixels)
    reduction = reducer(feats.features, feats.grid).reduce_extras(feats.extras)
    reduction.frame_times = [i / video.fps for i in video.indices]
    return feats, reduction, backbone.build_input(prompt, reduction)


@pytest.mark.parametrize("name, frames, task", [("bikes.mp4", 8, "open_ended"),
                                                ("bigbuckbunny.mp4", 6, "multiple_choice"),
                                                ("bigbuckbunny.mp4", 7, "open_ended")])   # odd: last frame repeated
def test_identity_reducer_is_the_models_own_video_path(backbone, processor, name, frames, task):
    video, pixels = clip(backbone, name, frames)
    options = ["a rabbit", "a car", "a bird"] if task == "multiple_choice" else None
    prompt = backbone.prompt(task, "what is in the video?", options)
    expected = processor_inputs(processor, backbone, prompt, video, pixels)
    feats, reduction, item = backbone_input(backbone, prompt, video, pixels, ConcatReducer(frames))
    # the features and the DeepStack features: the model's own video path, bitwise
    own = backbone.model.model.get_video_features(expected["pixel_values_videos"], expected["video_grid_thw"])
    assert torch.equal(feats.features.reshape(-1, feats.features.shape[-1]), own.pooler_output[0])
    assert len(feats.extras) == 2 and all(torch.equal(e.reshape(own.deepstack_features[i][0].shape),
                                                      own.deepstack_features[i][0]) for i, e in enumerate(feats.extras))
    # the sequence: the processor's ids (timestamps and markers per temporal patch) and get_rope_index's ids
    ids = expected["input_ids"][0]
    layout = VideoLayout.build(backbone.tokenizer, backbone.model.model, prompt.before, prompt.after,
                               backbone.patch_times(reduction), feats.grid)
    assert torch.equal(layout.ids, ids)
    rope, _ = backbone.model.model.get_rope_index(expected["input_ids"], expected["mm_token_type_ids"],
                                                 video_grid_thw=expected["video_grid_thw"])
    assert torch.equal(item.positions, rope[:, 0])
    assert torch.equal(item.embeds[item.visual_rows], reduction.tokens)
    # the answer: model.generate on the processor's output
    reference = backbone.model.generate(**expected, generation_config=greedy(backbone))[:, ids.shape[0]:]
    ours = backbone.generate_ids([item], greedy(backbone))
    assert ours.shape[1] >= 3 and ours.tolist() == reference.tolist()
    # the DeepStack features reach the model: without them (zeros) the first logits change
    flat = Qwen3Input(item.embeds, item.positions, item.visual_tokens, visual_rows=item.visual_rows,
                      deepstack=tuple(torch.zeros_like(d) for d in item.deepstack))
    first = [backbone.generate_ids([i], greedy(backbone), output_logits=True, return_dict_in_generate=True).logits[0]
             for i in (item, flat)]
    assert (first[0] - first[1]).abs().max() > 1e-3


def test_timestamps_are_the_processors(processor):
    indices, fps = [0, 13, 26, 38, 51], 29.97
    times = patch_timestamps([i / fps for i in indices])
    assert times == processor._calculate_timestamps(indices, fps, 2)
    assert patch_timestamps([0.0, 1.0, 2.0, 3.0]) == [0.5, 2.5]


def test_a_reduction_keeps_its_cells_ids_timestamps_and_deepstack(backbone):
    """DyTo (merges, drops temporal patches): every token sits at its own cell's id in the full
    sequence, each kept patch keeps its timestamp, and the DeepStack rows are the same merge."""
    video, pixels = clip(backbone, "bikes.mp4", 16)
    prompt = backbone.prompt("open_ended", "what happens?")
    feats, full_red, full = backbone_input(backbone, prompt, video, pixels, ConcatReducer(16))
    _, reduction, item = backbone_input(backbone, prompt, video, pixels, DyToReducer(budget=12, num_frames=16))
    assert reduction.tokens.shape[0] < full_red.tokens.shape[0]
    h, w = feats.grid
    f, r, c = reduction.positions.unbind(1)
    full_rows = full.visual_rows[(f * h + r) * w + c]                                # each token's own cell
    assert torch.equal(item.positions[:, item.visual_rows], full.positions[:, full_rows])
    text = backbone.tokenizer.decode(backbone_layout_ids(backbone, prompt, reduction, item))
    kept = sorted(set(f.tolist()))
    stamps = [f"<{t:.1f} seconds>" for t in patch_timestamps([i / video.fps for i in video.indices])]
    assert [s for s in stamps if s in text] == [stamps[k] for k in kept]
    assert text.count("<|vision_start|>") == len(kept)                               # one run per kept patch
    assert torch.equal(item.positions[:, -1], full.positions[:, -1])                  # text keeps its ids
    for level, extra in enumerate(feats.extras):                                      # DyTo: amax merges
        assert torch.equal(item.deepstack[level], reduction.assignment.apply(extra))
    assert item.truncated(item.length - 3).deepstack[0].shape[0] == item.visual_tokens
    cut = item.truncated(int(item.visual_rows[2]))
    assert cut.visual_tokens == 2 and all(d.shape[0] == 2 for d in cut.deepstack)
    assert backbone.generate_ids([item], greedy(backbone)).shape[1] >= 1


def backbone_layout_ids(backbone, prompt, reduction, item):
    layout = VideoLayout.build(backbone.tokenizer, backbone.model.model, prompt.before, prompt.after,
                               backbone.patch_times(reduction), backbone.grid)
    rows, _ = layout.reduced(reduction.positions)
    return layout.ids[rows].tolist()


def test_pruned_deepstack_is_the_kept_cells_and_batches_pad_alike(backbone):
    """V-CAST keeps tokens as they are: their DeepStack rows are the encoder's at those cells; a
    batch with a longer sequence (left padding) answers as alone."""
    video, pixels = clip(backbone, "bigbuckbunny.mp4", 12)
    prompt = backbone.prompt("open_ended", "what animal is this?")
    feats, reduction, item = backbone_input(backbone, prompt, video, pixels, VCastReducer(num_frames=12))
    f, r, c = reduction.positions.unbind(1)
    cells = r * feats.grid[1] + c
    for level, extra in enumerate(feats.extras):
        assert torch.equal(item.deepstack[level], extra[f, cells])
    question = "what happens in the whole clip, from the start to the end?"
    _, _, longer = backbone_input(backbone, backbone.prompt("open_ended", question), video, pixels, ConcatReducer(12))
    alone = backbone.generate_ids([item], greedy(backbone))
    batched = backbone.generate_ids([longer, item], greedy(backbone))
    assert batched[1, : alone.shape[1]].tolist() == alone[0].tolist()


def test_the_inner_stage_hook_adds_deepstack_as_the_model_does(backbone):
    """``inner_hook`` (an inner-LLM stage's layer loop calls it after every prefill layer): on the
    plain language model it gives the logits of the model's own forward with its DeepStack rows."""
    video, pixels = clip(backbone, "bikes.mp4", 8)
    _, _, reduced = backbone_input(backbone, backbone.prompt("open_ended", "what happens?"), video, pixels,
                                   DyToReducer(budget=12, num_frames=8))
    _, _, whole = backbone_input(backbone, backbone.prompt("open_ended", "who rides, and where?"), video, pixels,
                                 ConcatReducer(8))
    inputs = [reduced, whole]
    own = backbone.model(**backbone.model_inputs(inputs)).logits
    embeds, mask, positions = backbone.llm_batch(inputs)
    columns = torch.arange(embeds.shape[1]).expand(2, -1).masked_fill(mask == 0, -1)
    hook = backbone.inner_hook(inputs)
    layers = backbone.model.model.language_model.layers
    handles = [layer.register_forward_hook(lambda module, args, out, i=i: hook(i, out, columns))
               for i, layer in enumerate(layers)]
    try:
        hooked = backbone.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    finally:
        for h in handles:
            h.remove()
    plain = backbone.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    rows = mask.bool()
    torch.testing.assert_close(hooked[rows], own[rows], rtol=1e-5, atol=1e-5)
    assert (plain[rows] - own[rows]).abs().max() > 1e-3


def test_reducers_that_cannot_run_say_so_at_config_time(backbone):
    with pytest.raises(ConfigError, match="no CLS"):
        VideoQA(backbone=backbone, reducer=DyToReducer(num_frames=8, descriptor="cls"))
    with pytest.raises(ConfigError, match="num_frames.*multiple of 2"):
        VideoQA(backbone=backbone, reducer=ConcatReducer(7))

    class NoAssignment(ConcatReducer):
        assigns = False

    with pytest.raises(ConfigError, match="assignment"):
        VideoQA(backbone=backbone, reducer=NoAssignment(8))
    with pytest.raises(ValueError, match="DeepStack"):
        _, pixels = clip(backbone, "bikes.mp4", 4)
        backbone.build_input(backbone.prompt("open_ended", "q"), ConcatReducer(4)(backbone.encode(pixels).features,
                                                                                 backbone.grid))
