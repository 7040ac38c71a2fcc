"""Pictures of what DyTo did (matplotlib; every function returns a Figure).

Figures are built without pyplot, so importing this module changes no backend and no global
state (callbacks draw from worker code); in a notebook a returned Figure displays itself.

* `keyframe_strip`: every sampled frame as a thumbnail, framed in the colour of its TW-FINCH
  cluster in the chosen partition; kept frames get a thick frame and a marker; a legend says so.
* `merge_map`: for one kept frame, which of its patches survive as their own token and which
  were merged into which (merged groups share a colour; the dropped token 0 is hatched grey).
* `budget_plot`: visual tokens per question (histogram) per reducer, and accuracy against mean
  tokens per reducer, from finished runs.
* `sweep_plot`: `dyto sweep`'s accuracy against mean visual tokens, one line per reducer, with
  the 95% bootstrap intervals as error bars.
* `reduction_pictures`: the keyframe strip and merge map of one video's reduction, titled with the
  video's name: what every run (``PicturesCallback``) and every `dyto sweep` cell write to `logs/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from dyto.reduction.merge import merge_with_assignment

__all__ = ["budget_plot", "headline_metric", "keyframe_strip", "merge_map", "reduction_pictures", "save_figure",
           "save_reduction_pictures", "save_run_pictures", "sweep_plot", "to_uint8_frames"]

LEGEND_CLUSTERS = 10  # clusters named in the keyframe legend; more are summarised


def _palette(n: int) -> np.ndarray:
    """n distinguishable RGB colours (tab20, then a golden-ratio hue walk beyond 20)."""
    base = matplotlib.colormaps["tab20"](np.arange(20))[:, :3]
    if n <= 20:
        return base[:n]
    hues = (np.arange(n) * 0.618034) % 1.0
    extra = matplotlib.colors.hsv_to_rgb(np.stack([hues, np.full(n, 0.65), np.full(n, 0.9)], axis=1))
    return np.concatenate([base, extra[20:]])


def keyframe_strip(frames: np.ndarray, labels: Sequence[int], kept: Sequence[int], columns: int = 20,
                   title: str | None = None, clustered: bool = True) -> Figure:
    """frames: uint8 [T, H, W, 3]; labels: cluster of each frame [T]; kept: indices into frames.
    ``clustered`` False (a reducer without clusters): one colour, and the legend names none."""
    t = len(frames)
    if len(labels) != t:
        raise ValueError(f"{len(labels)} cluster labels for {t} frames")
    kept_set = set(int(k) for k in kept)
    colours = _palette(int(max(labels)) + 1)
    columns = max(1, min(columns, t))
    rows = -(-t // columns)
    top, bottom = 0.45, 0.75  # inches above the frames (title, stars) and below them (legend)
    fig = Figure(figsize=(max(columns * 0.9, 7.5), rows * 0.95 + top + bottom))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(t):
        ax = axes.flat[i]
        ax.imshow(frames[i])
        ax.axis("on")
        ax.set_xticks([]), ax.set_yticks([])
        width = 4.0 if i in kept_set else 1.2
        for spine in ax.spines.values():
            spine.set_edgecolor(colours[int(labels[i])])
            spine.set_linewidth(width)
        if i in kept_set:
            ax.set_title("\u2605", fontsize=9, color="black", pad=1)
    k = len(set(int(x) for x in labels))
    fig.suptitle(title or f"{t} sampled frames, {k} clusters, {len(kept_set)} kept (\u2605)", fontsize=10)
    handles = [Patch(facecolor="white", edgecolor="black", linewidth=3, label="\u2605 kept (thick border)"),
               Patch(facecolor="white", edgecolor="black", linewidth=1, label="not kept (thin border)")]
    if clustered:
        shown = sorted(set(int(x) for x in labels))
        handles += [Patch(facecolor="white", edgecolor=colours[c], linewidth=2, label=f"cluster {c}")
                    for c in shown[:LEGEND_CLUSTERS]]
        if len(shown) > LEGEND_CLUSTERS:
            handles.append(Patch(facecolor="none", edgecolor="none", label=f"+ {len(shown) - LEGEND_CLUSTERS} more"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8, frameon=False,
               title="border colour: the frame's TW-FINCH cluster" if clustered else None, title_fontsize=8)
    height = fig.get_figheight()
    fig.tight_layout(pad=0.3, rect=(0, bottom / height, 1, 1 - top / height))
    return fig


def merge_map(image: np.ndarray, features: torch.Tensor, grid: tuple[int, int], r_list: Sequence[int],
              reduce: str = "amax", drop_first: bool = True, title: str | None = None,
              subtitle: str | None = None) -> Figure:
    """image: uint8 [H, W, 3]; features: [h*w, D] of that frame before merging; ``subtitle``: a
    first title line (the video and frame).

    Recomputes the frame's merge with `merge_with_assignment` (the same code path as DyTo) and
    paints each patch: clear = survived as its own token, coloured = merged (one colour per
    destination token), hatched grey = token 0, which DyTo drops before merging.
    """
    h, w = grid
    n = features.shape[0]
    if n != h * w:
        raise ValueError(f"{n} tokens do not fill a {h}x{w} grid")
    offset = 1 if drop_first else 0
    _, assignment = merge_with_assignment(features[offset:], list(r_list), reduce)
    assignment = assignment.cpu().numpy()
    group_size = np.bincount(assignment)
    merged_groups = np.flatnonzero(group_size > 1)
    colours = _palette(len(merged_groups))
    colour_of = {int(g): colours[i] for i, g in enumerate(merged_groups)}
    overlay = np.zeros((h * w, 4))
    for tok in range(offset, n):
        dest = int(assignment[tok - offset])
        if group_size[dest] > 1:
            overlay[tok, :3], overlay[tok, 3] = colour_of[dest], 0.55
    fig = Figure(figsize=(5, 5 * image.shape[0] / image.shape[1] + (0.6 if subtitle else 0.4)))
    ax = fig.subplots()
    ax.imshow(image, extent=(0, w, h, 0))
    ax.imshow(overlay.reshape(h, w, 4), extent=(0, w, h, 0), interpolation="nearest")
    if drop_first:
        ax.add_patch(Rectangle((0, 0), 1, 1, facecolor="0.5", hatch="xx", alpha=0.8))
    ax.set_xticks([]), ax.set_yticks([])
    own = int((group_size[assignment[np.arange(n - offset)]] == 1).sum())
    title = title or (f"{n - offset} patches -> {len(group_size)} tokens: {own} kept alone, "
                      f"{n - offset - own} merged into {len(merged_groups)} groups")
    ax.set_title(f"{subtitle}\n{title}" if subtitle else title, fontsize=9)
    fig.tight_layout(pad=0.3)
    return fig


def headline_metric(results: dict[str, Any]) -> float | None:
    """The run's main accuracy in percent from `logs/results.json`: multiple-choice accuracy, else
    the open-ended judge's accuracy (reference denominator), of the first benchmark that has one."""
    for entry in results.get("metrics", {}).get("benchmarks", {}).values():
        for value in (entry.get("multiple_choice", {}).get("accuracy"),
                      entry.get("judged", {}).get("default", {}).get("accuracy")):
            if isinstance(value, (int, float)):
                return float(value)
    return None


def budget_plot(runs: dict[str, Any]) -> Figure:
    """runs: label -> `dyto.api.Run`. Left: visual tokens per question; right: accuracy vs mean tokens."""
    fig = Figure(figsize=(10, 3.6))
    left, right = fig.subplots(1, 2)
    colours = _palette(len(runs))
    tokens_of = {label: [p["visual_tokens_out"] for p in run.predictions
                         if p.get("status") == "ok" and p.get("visual_tokens_out") is not None]
                 for label, run in runs.items()}
    every = [t for tokens in tokens_of.values() for t in tokens]
    # one set of whole-token bins for every run: a run whose questions all have one count gets a
    # bar as wide as the others' (bins of its own would be 1/20 token wide, i.e. invisible)
    lo, hi = (min(every), max(every)) if every else (0, 0)
    edges = np.linspace(lo - 0.5, hi + 0.5, min(20, hi - lo + 1) + 1)
    accs = []
    for colour, (label, run) in zip(colours, runs.items()):
        tokens = tokens_of[label]
        if not tokens:
            continue
        left.hist(tokens, bins=edges, alpha=0.6, color=colour, label=f"{label} (mean {np.mean(tokens):.0f})")
        acc = headline_metric(run.results)
        if acc is not None:
            accs.append(acc)
            right.scatter([np.mean(tokens)], [acc], color=colour, s=60, clip_on=False)  # whole at 0 or 100
            right.annotate(label, (np.mean(tokens), acc), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if accs:  # accuracy lives in [0, 100]: no negative range around an all-zero panel
        low, high = right.get_ylim()
        low, high = max(0.0, low), min(100.0, high)
        right.set_ylim((0.0, max(5.0, 1.2 * max(accs))) if high - low < 1.0 else (low, high))
    left.set_xlabel("visual tokens per question"), left.set_ylabel("questions"), left.legend(fontsize=8)
    right.set_xlabel("mean visual tokens"), right.set_ylabel("accuracy (%)")
    right.set_title("accuracy vs token budget", fontsize=10)
    left.set_title("token budget per question", fontsize=10)
    fig.tight_layout()
    return fig


def sweep_plot(rows: Sequence[dict[str, Any]], title: str = "accuracy vs visual tokens") -> Figure:
    """rows: `dyto sweep` cells (`label`, `visual_tokens`: {mean}, `accuracy`: {estimate, low, high}).

    One line per reducer through its cells in token order, the 95% bootstrap intervals as error
    bars; a cell without tokens or accuracy is left out (its row in the table says why).
    """
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    lines: dict[str, list[tuple[float, float, float, float]]] = {}
    for r in rows:
        if r.get("visual_tokens") and r.get("accuracy"):
            a = r["accuracy"]
            lines.setdefault(r["label"], []).append((r["visual_tokens"]["mean"], a["estimate"], a["low"], a["high"]))
    for colour, (label, points) in zip(_palette(len(lines)), lines.items()):
        x, y, low, high = (np.array(v) for v in zip(*sorted(points)))
        ax.errorbar(x, y, yerr=[y - low, high - y], color=colour, marker="o", capsize=3, label=label)
    ax.set_xlabel("mean visual tokens per question"), ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    if lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def to_uint8_frames(pixels: torch.Tensor, mean, std) -> np.ndarray:
    """Normalised pixels [T, 3, S, S] -> uint8 [T, S, S, 3] for display."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    img = (pixels.detach().float().cpu() * s + m).clamp(0, 1) * 255
    return img.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def reduction_pictures(frames: np.ndarray, features: torch.Tensor, reduction: Any, grid: tuple[int, int], *,
                       reducer: str, reduce: str = "amax", frames_per_patch: int = 1,
                       video: str | None = None) -> dict[str, Figure]:
    """``{"keyframes": ..., "merge_map": ...}`` of one video's reduction (no merge map when the
    reducer merged nothing within frames). frames: uint8 [T, H, W, 3] as sampled; features:
    [T', N, D] the reducer's input (T' = T / frames_per_patch); reduction: its output."""
    # a reducer's frame is a temporal patch of `frames_per_patch` sampled frames (2 for
    # Qwen2.5-VL): show the first frame of each patch, so frame k of the strip is patch k
    frames = frames[::frames_per_patch][: features.shape[0]]
    unit = "sampled frames" if frames_per_patch == 1 else f"temporal patches of {frames_per_patch} frames"
    selection = reduction.info.get("selection")
    labels = selection.labels.tolist() if selection is not None else [0] * len(frames)
    where = f"{video}: " if video else ""
    figures = {"keyframes": keyframe_strip(frames, labels, reduction.frames_kept, clustered=selection is not None,
                                           title=f"{where}{reducer}, {len(frames)} {unit}, "
                                                 f"{len(reduction.frames_kept)} kept")}
    if "r_list" in reduction.info and reduction.frames_kept:
        k = reduction.frames_kept[len(reduction.frames_kept) // 2]
        figures["merge_map"] = merge_map(frames[k], features[k].float().cpu(), grid, reduction.info["r_list"],
                                         reduce, subtitle=f"{where}{reducer}, frame {k}")
    return figures


def save_reduction_pictures(logs, pixels: torch.Tensor, mean, std, features: torch.Tensor, reduction: Any,
                            grid: tuple[int, int], **kwargs: Any) -> list[str]:
    """`reduction_pictures` from normalised pixels [T, 3, S, S], saved as ``logs/<name>.png``;
    returns the names written. ``kwargs``: those of `reduction_pictures`."""
    logs = Path(logs)
    logs.mkdir(parents=True, exist_ok=True)
    figures = reduction_pictures(to_uint8_frames(pixels, mean, std), features, reduction, grid, **kwargs)
    for name, fig in figures.items():
        save_figure(fig, logs / f"{name}.png")
    return list(figures)


def save_run_pictures(logs, module: Any, pixels: torch.Tensor, features: torch.Tensor, cls, reducer: Any,
                      name: str, video: str | None = None) -> list[str]:
    """A run's (or a sweep cell's) pictures: ``reducer`` applied to one video's ``features`` on the
    grid of these pixels (``module.backbone.grid_for``: per video under ``protocol: lmms_eval``),
    as ``save_reduction_pictures`` draws them. ``module``: a VideoQA (read, never imported here)."""
    backbone = getattr(module, "backbone", None)
    grid = backbone.grid_for(pixels) if backbone is not None else module.grid
    per_patch = getattr(getattr(module, "preprocessing", None), "frames_per_patch", 1)
    return save_reduction_pictures(logs, pixels, module.image_mean, module.image_std, features,
                                   reducer(features, grid, cls), grid, reducer=name,
                                   reduce=getattr(reducer, "reduce", "amax"), video=video, frames_per_patch=per_patch)


def save_figure(fig: Figure, path) -> None:
    fig.savefig(path, dpi=110)
