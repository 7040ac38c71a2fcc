"""Token-reduction speed on the CPU: every registered reducer vs a naive DyTo in the same process.

Run:  .venv/bin/python benchmarks/bench_reduction.py [--repeats 5]
      .venv/bin/python benchmarks/bench_reduction.py --reducers [--frames 100] [--repeats 1]

``--reducers`` times every registered reducer on the same seeded [frames, 576, 4096] float32
input (each built with ``num_frames=frames`` and its defaults) and prints each one's median
time as a multiple of DyTo's, measured in the same process.

Input: seeded float32 features [100, 576, 4096] (the reference 7B shape; [50, 576, 4096] for
SlowFast, [8, ...] for uniform). The baseline ("naive") is the reference token path written the
straightforward way: TW-FINCH in NumPy with a Python-loop first-neighbour graph and BFS
components, then one merge call per kept frame with the ``x * size`` bookkeeping. Its output is
checked against the library's (same frames, tokens to 1e-5) before timing. Prints median ms and
the speed-up vs the naive DyTo; exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from dyto.reduction import REDUCERS, build_reducer


def naive_finch(x: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """TW-FINCH on x [T, D] with Python loops for the graph and its components."""
    n = x.shape[0]
    data = np.concatenate([x, ((np.arange(n) + 1.0) / n)[:, None]], 1).astype(np.float32)

    def level(rows):
        feats, loc = rows[:, :-1], rows[:, -1]
        unit = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-30)
        dist = np.clip(1 - unit @ unit.T, 0, 2) * np.sqrt((loc[:, None] - loc[None]) ** 2)
        np.fill_diagonal(dist, 1e12)
        k = len(rows)
        neighbours = [[] for _ in range(k)]
        for i in range(k):                       # i ~ argmin(i), both ways
            j = int(np.argmin(dist[i]))
            neighbours[i].append(j)
            neighbours[j].append(i)
        labels, count = [-1] * k, 0
        for start in range(k):
            if labels[start] < 0:
                labels[start], stack = count, [start]
                while stack:
                    for j in neighbours[stack.pop()]:
                        if labels[j] < 0:
                            labels[j] = count
                            stack.append(j)
                count += 1
        return np.array(labels), count

    def means(c):
        sums = np.zeros((c.max() + 1, data.shape[1]), np.float32)
        np.add.at(sums, c, data)
        return sums / np.bincount(c)[:, None]

    c, count = level(data)
    columns, counts = [c], [count]
    while count > 1:
        u, count = level(means(c))
        if count == 1 or count >= counts[-1]:
            break
        c = u[c]
        columns.append(c)
        counts.append(count)
    return np.stack(columns, 1), counts


def naive_merge_frame(x: torch.Tensor, r_list: list[int]) -> torch.Tensor:
    """One frame x [1, t, C], amax merging, the reference's bookkeeping."""
    size = torch.ones_like(x[..., :1])
    for r in r_list:
        t, c = x.shape[1:]
        half, r = t // 2, min(r, t // 2)
        if r <= 0:
            continue
        m = x.reshape(1, t, 16, c // 16).mean(2)
        m = m / m.norm(dim=-1, keepdim=True)
        score, best = (m[:, :half] @ m[:, half:].transpose(1, 2)).max(-1)
        order = score.argsort(-1, descending=True)[..., None]
        dst = best[..., None].gather(1, order[:, :r])

        def merge(v):
            a, b, w = v[:, :half], v[:, half:], v.shape[-1]
            src = a.gather(1, order[:, :r].expand(1, r, w))
            b = b.scatter_reduce(1, dst.expand(1, r, w), src, reduce="amax")
            return torch.cat([a.gather(1, order[:, r:].expand(1, half - r, w)), b], 1)

        x, size = merge(x * size), merge(size)
        x = x / size
    return x


def naive_dyto(features: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    c, counts = naive_finch(features[:, 0, :].numpy())
    labels = c[:, int(np.argsort(counts)[-2]) if len(counts) > 1 else 0]
    clusters = [np.nonzero(labels == k)[0] for k in np.unique(labels)]
    if len(clusters) <= 6:
        sel = sorted(i for m in clusters for i in m[: 12 // len(clusters)].tolist())
    else:
        sel = sorted(int(m[len(m) // 2] if len(m) > 2 else m[-1]) for m in clusters)
    if len(sel) > 25:
        sel = [sel[i] for i in np.linspace(0, len(sel) - 1, 25, dtype=int)]
    t = len(sel)
    r_list = [min(576 - 3680 // t, 288)] if t <= 12 else [288, min(288 - 3680 // t, 144)]
    tokens = [naive_merge_frame(features[i, 1:][None], r_list)[0] for i in sel]
    return sel, torch.cat(tokens)


def median_ms(fn, repeats: int) -> float:
    fn()                                              # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def compare_reducers(frames: int, repeats: int) -> None:
    """Every registered reducer on one [frames, 576, 4096] input, time relative to DyTo."""
    features = torch.randn(frames, 576, 4096, generator=torch.Generator().manual_seed(0))
    rows = []
    for name in sorted(REDUCERS):
        reducer = build_reducer(name, num_frames=frames)
        length = reducer(features, (24, 24)).tokens.shape[0]
        rows.append((name, length, median_ms(lambda: reducer(features, (24, 24)), repeats)))
    dyto_ms = dict((name, ms) for name, _, ms in rows)["dyto"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, features "
          f"[{frames}, 576, 4096] float32, median of {repeats} after a warm-up")
    print(f"{'reducer':<10} {'L out':>6} {'median ms':>10} {'x DyTo':>7}")
    for name, length, ms in rows:
        print(f"{name:<10} {length:>6} {ms:>10.1f} {ms / dyto_ms:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reducers", action="store_true",
                        help="time every registered reducer on the same input, relative to DyTo")
    parser.add_argument("--frames", type=int, default=100, help="T for --reducers")
    args = parser.parse_args()
    if args.reducers:
        compare_reducers(args.frames, args.repeats)
        return
    features = torch.randn(100, 576, 4096, generator=torch.Generator().manual_seed(0))
    grid = (24, 24)

    dyto = build_reducer("dyto")
    sel, naive_tokens = naive_dyto(features)
    out = dyto(features, grid)
    assert out.frames_kept == sel, (out.frames_kept, sel)
    torch.testing.assert_close(out.tokens, naive_tokens, rtol=0, atol=1e-5)

    rows = [("dyto (naive loops)", len(sel), naive_tokens.shape[0],
             median_ms(lambda: naive_dyto(features), args.repeats))]
    for name in sorted(REDUCERS):
        reducer = build_reducer(name)
        x = features[: reducer.num_frames]
        result = reducer(x, grid)
        rows.append((name, x.shape[0], result.tokens.shape[0],
                     median_ms(lambda: reducer(x, grid), args.repeats)))

    base = rows[0][3]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"features [T, 576, 4096] float32, median of {args.repeats}")
    print(f"{'reducer':<20} {'T in':>5} {'L out':>6} {'median ms':>10} {'vs naive':>9}")
    for name, t, length, ms in rows:
        # only DyTo does the naive baseline's work; concat/uniform are views (no copy)
        ratio = f"{base / ms:>8.1f}x" if name.startswith("dyto") else f"{'-':>9}"
        print(f"{name:<20} {t:>5} {length:>6} {ms:>10.2f} {ratio}")
    print(f"naive output == library output: frames {sel}, {naive_tokens.shape[0]} tokens")


if __name__ == "__main__":
    main()
