"""The pictures are drawn from real data: a real clip, the real reducer, real runs' records."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dyto import api, viz

DEMO = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo"


def pixels(fig) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32)


@pytest.fixture(scope="module")
def bunny():
    clip = api.load_clip(DEMO / "bigbuckbunny.mp4", num_frames=100)
    feats = api.standin_features(clip)
    return clip, feats, api.reduce(feats, "dyto")


def test_keyframe_strip_marks_exactly_the_kept_frames(bunny):
    clip, _, red = bunny
    sel = red.info["selection"]
    fig = viz.keyframe_strip(clip.frames, sel.labels.tolist(), red.frames_kept)
    thick = [ax for ax in fig.axes if ax.spines["top"].get_linewidth() >= 4.0]
    stars = [ax for ax in fig.axes if ax.get_title() == "\u2605"]
    assert len(thick) == len(stars) == len(red.frames_kept) >= 1
    assert len([ax for ax in fig.axes if ax.images]) == len(clip.frames)
    assert pixels(fig).std() > 20  # real thumbnails, not a blank canvas


def test_keyframe_strip_rejects_mismatched_labels(bunny):
    clip, _, red = bunny
    with pytest.raises(ValueError, match="cluster labels"):
        viz.keyframe_strip(clip.frames, [0, 1], red.frames_kept)


def test_merge_map_colours_every_merged_patch(bunny):
    clip, feats, red = bunny
    k = red.frames_kept[0]
    fig = viz.merge_map(clip.frames[k], feats[k], (24, 24), red.info["r_list"])
    overlay = fig.axes[0].images[1].get_array()
    merged_patches = int((np.asarray(overlay)[..., 3] > 0).sum())
    merges = 575 - red.tokens_per_frame[0]  # each merge removes one token
    if merges == 0:
        assert merged_patches == 0
    else:  # every source is coloured, and so is its destination (shared by several sources)
        assert merges < merged_patches <= 2 * merges
    assert pixels(fig).std() > 20


def test_budget_plot_from_finished_runs(tmp_path):
    from dyto.records import write_jsonl

    runs = {}
    for name, tokens, acc in (("dyto", [3660, 3675, 3450], 65.7), ("slowfast", [3680, 3680, 3680], 64.2)):
        run_dir = tmp_path / name
        write_jsonl(run_dir / "artifacts" / "predictions.jsonl",
                    [{"id": str(i), "status": "ok", "visual_tokens_out": t, "reducer": {"name": name}}
                     for i, t in enumerate(tokens)])
        (run_dir / "logs").mkdir()
        (run_dir / "logs" / "results.json").write_text(
            json.dumps({"metrics": {"benchmarks": {"nextqa": {"multiple_choice": {"accuracy": acc}}}}}))
        runs[name] = api.load_run(run_dir)
    fig = viz.budget_plot(runs)
    assert len(fig.axes[0].patches) > 0
    points = [tuple(c.get_offsets()[0]) for c in fig.axes[1].collections]
    assert points == [(pytest.approx(3595.0), 65.7), (3680.0, 64.2)]
    assert pixels(fig).std() > 5


def test_budget_plot_keeps_a_single_valued_run_and_an_all_zero_panel_non_negative(tmp_path):
    from dyto.records import write_jsonl

    runs = {}
    for name, tokens in (("dyto", [26, 60, 100, 81]), ("uniform", [96, 96, 96, 96])):  # uniform: one count
        run_dir = tmp_path / name
        write_jsonl(run_dir / "artifacts" / "predictions.jsonl",
                    [{"id": str(i), "status": "ok", "visual_tokens_out": t} for i, t in enumerate(tokens)])
        (run_dir / "logs").mkdir()
        (run_dir / "logs" / "results.json").write_text(
            json.dumps({"metrics": {"benchmarks": {"nextqa": {"multiple_choice": {"accuracy": 0.0}}}}}))
        runs[name] = api.load_run(run_dir)
    fig = viz.budget_plot(runs)
    left, right = fig.axes
    per_run = left.containers  # one BarContainer per run, in order
    assert len(per_run) == 2
    widths = [[bar.get_width() for bar in c if bar.get_height() > 0] for c in per_run]
    heights = [sorted(bar.get_height() for bar in c if bar.get_height() > 0) for c in per_run]
    assert heights[1] == [4] and widths[1][0] == pytest.approx(widths[0][0]) and widths[1][0] >= 1.0  # one bar
    span = left.get_xlim()[1] - left.get_xlim()[0]
    assert widths[1][0] / span > 0.02
    low, high = right.get_ylim()
    assert low == 0.0 and high > 0.0  # an all-zero accuracy panel, not [-0.06, 0.06]


def test_the_run_pictures_name_their_video_and_explain_the_marks():
    clip = api.load_clip(DEMO / "bikes.mp4", num_frames=20)  # 20 frames: a strip of 100 takes seconds
    feats = api.standin_features(clip)
    red = api.reduce(feats, "dyto")
    figs = viz.reduction_pictures(clip.frames, feats, red, (24, 24), reducer="dyto", video="bikes.mp4")
    strip = figs["keyframes"]
    assert strip._suptitle.get_text().startswith("bikes.mp4: dyto, 20 sampled frames, ")
    legend = strip.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    clusters = len(set(red.info["selection"].labels.tolist()))
    assert labels[:2] == ["\u2605 kept (thick border)", "not kept (thin border)"]
    assert labels[2:] == [f"cluster {c}" for c in range(min(clusters, viz.LEGEND_CLUSTERS))] + \
        ([f"+ {clusters - viz.LEGEND_CLUSTERS} more"] if clusters > viz.LEGEND_CLUSTERS else [])
    assert "TW-FINCH cluster" in legend.get_title().get_text()
    assert figs["merge_map"].axes[0].get_title().startswith("bikes.mp4: dyto, frame ")
    plain = viz.reduction_pictures(clip.frames, feats, api.reduce(feats, "uniform"), (24, 24), reducer="uniform")
    assert set(plain) == {"keyframes"}  # nothing merged within frames: no merge map
    assert [t.get_text() for t in plain["keyframes"].legends[0].get_texts()][2:] == []  # and no clusters to name
