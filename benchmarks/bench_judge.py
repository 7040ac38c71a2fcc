"""Judge throughput against a local OpenAI-compatible server that answers after 200 ms.

The judge is I/O bound: with N threads it should approach N x the single-thread rate, minus
the cost of the per-judgment fsync and the HTTP client. 1,000 items at concurrency 16 (target
< 20 s); concurrency 1 is measured on a shorter run (--serial-items, default 50) and
extrapolated to 1,000 items, because the full run would take over 200 s.

    python benchmarks/bench_judge.py [--items 1000] [--concurrency 16] [--serial-items 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from judge_server import JudgeServer  # noqa: E402

from dyto.evaluation.judge import Judge, JudgeConfig  # noqa: E402
from dyto.records import prediction_record  # noqa: E402


def items(n: int, tag: str) -> list[dict]:
    return [prediction_record({"id": f"{tag}{i}", "benchmark": "bench", "task": "open_ended",
                               "question": f"{tag} question {i}?", "answer": "dog"},
                              status="ok", prediction=f"a dog, number {i}") for i in range(n)]


def timed(url: str, n: int, concurrency: int, tag: str) -> tuple[float, object]:
    with tempfile.TemporaryDirectory() as tmp:
        judge = Judge(JudgeConfig(base_url=url, concurrency=concurrency, timeout=10))
        t0 = time.perf_counter()
        stats = judge.run(items(n, tag), Path(tmp) / "judgments.jsonl")
        return time.perf_counter() - t0, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--serial-items", type=int, default=50)
    ap.add_argument("--latency", type=float, default=0.2, help="server answer delay (s)")
    args = ap.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench-local")
    with JudgeServer("good", delay_s=args.latency) as srv:
        par_s, par = timed(srv.base_url, args.items, args.concurrency, "p")
        ser_s, ser = timed(srv.base_url, args.serial_items, 1, "s")
    ser_full = ser_s * args.items / args.serial_items
    ideal = args.items * args.latency / args.concurrency
    print(f"server latency {args.latency * 1000:.0f} ms, {os.cpu_count()} CPUs")
    print(f"{'run':<34}{'items':>7}{'judged':>8}{'wall s':>9}{'items/s':>9}")
    print(f"{'concurrency ' + str(args.concurrency):<34}{args.items:>7}{par.judged:>8}{par_s:>9.2f}{args.items / par_s:>9.1f}")
    print(f"{'concurrency 1 (measured)':<34}{args.serial_items:>7}{ser.judged:>8}{ser_s:>9.2f}{args.serial_items / ser_s:>9.1f}")
    print(f"{'concurrency 1 (extrapolated)':<34}{args.items:>7}{'-':>8}{ser_full:>9.2f}{args.items / ser_full:>9.1f}")
    print(f"speed-up {ser_full / par_s:.1f}x (ideal {args.concurrency}x); ideal wall at concurrency "
          f"{args.concurrency}: {ideal:.2f} s; target < 20 s: {'met' if par_s < 20 else 'MISSED'}")


if __name__ == "__main__":
    main()
