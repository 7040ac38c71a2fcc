"""`dyto prepare BENCHMARK --qa-file PATH --out FILE.jsonl [--video-root DIR]`.

BENCHMARK is any registered benchmark (``dyto.datamodules.benchmarks``); its spec's preparer reads
the sheet.

Turns a raw QA sheet into canonical JSONL and says what happened: records written, rows skipped
(with file:line and why), rows repaired, and, given a video root, which videos are missing. The
reference runners skip missing videos silently and so shrink the denominator; this report is where
coverage is checked before a multi-hour run. The video lookup is the DataModule's own
(`paths.resolver_for`), so "found" here means "decoded there". The full list of missing videos
goes to `<out>.missing_videos.txt` (its path is printed); a video root that does not exist is
named as such, not counted as an empty folder. A gzipped sheet (`.csv.gz`) is read as it is.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dyto.datamodules.benchmarks import BENCHMARKS, get_benchmark
from dyto.datamodules.paths import VideoError, resolver_for
from dyto.datamodules.sheets import RowError
from dyto.records import QARecord, write_jsonl, write_text_atomic

__all__ = ["PrepareReport", "RowError", "main", "prepare", "video_coverage"]


@dataclass
class PrepareReport:
    benchmark: str
    qa_file: str
    out: str
    records: int
    errors: list[RowError]
    fixes: list[str]  # "id: what was repaired"
    video_root: str | None = None
    videos_found: int = 0  # distinct videos found under video_root
    videos_missing: list[str] = field(default_factory=list)  # distinct video names not found
    questions_without_video: int = 0
    missing_list: str | None = None  # the file listing every missing video, one per line

    @property
    def video_root_exists(self) -> bool:
        return self.video_root is not None and Path(self.video_root).is_dir()

    def summary(self) -> str:
        lines = [f"{self.benchmark}: wrote {self.records} records to {self.out} (from {self.qa_file})",
                 f"  rows skipped: {len(self.errors)}", *(f"    {e}" for e in self.errors),
                 f"  rows repaired: {len(self.fixes)}", *(f"    {f}" for f in self.fixes)]
        if self.video_root is not None and not self.video_root_exists:
            lines.append(f"  videos: {self.video_root} does not exist, so no video was checked "
                         "(--video-root must be the folder that holds the benchmark's videos)")
        elif self.video_root is not None:
            total = self.videos_found + len(self.videos_missing)
            lines.append(f"  videos under {self.video_root}: {self.videos_found}/{total} found, "
                         f"{len(self.videos_missing)} missing ({self.questions_without_video} questions affected)")
            lines += [f"    missing: {v}" for v in self.videos_missing[:20]]
            if len(self.videos_missing) > 20:
                lines.append(f"    ... and {len(self.videos_missing) - 20} more")
            if self.missing_list:
                lines.append(f"  every missing video, one per line: {self.missing_list}")
        return "\n".join(lines)


def video_coverage(records: list[QARecord], benchmark: str, video_root: str | os.PathLike,
                   video_map: str | os.PathLike | None = None) -> tuple[int, list[str], int]:
    """(distinct videos found, distinct videos missing, questions whose video is missing)."""
    resolve = resolver_for(benchmark, video_root, video_map)
    status: dict[str, bool] = {}
    affected = 0
    for rec in records:
        if rec.video not in status:
            try:
                resolve(rec)
                status[rec.video] = True
            except VideoError:
                status[rec.video] = False
        affected += not status[rec.video]
    return sum(status.values()), sorted(v for v, ok in status.items() if not ok), affected


def prepare(benchmark: str, qa_file: str | os.PathLike, out: str | os.PathLike,
            video_root: str | os.PathLike | None = None, video_map: str | os.PathLike | None = None) -> PrepareReport:
    """Prepare one benchmark's sheet; the JSONL is byte-identical on every rerun of the same input."""
    spec = get_benchmark(benchmark)  # ValueError naming the known benchmarks
    prepared = spec.prepare(Path(qa_file))
    wrong = [r.id for r in prepared.records if r.benchmark != benchmark or r.task not in spec.tasks]
    if wrong:  # a preparer bug, not a bad sheet: say so before writing anything
        raise ValueError(f"the {benchmark!r} preparer made records of another benchmark or of a task not in "
                         f"{spec.tasks} (first: {wrong[0]!r})")
    write_jsonl(out, (r.to_dict() for r in prepared.records))
    report = PrepareReport(benchmark, str(qa_file), str(out), len(prepared.records), prepared.errors,
                           [f"{r.id}: {r.meta['fixed']}" for r in prepared.records if "fixed" in r.meta])
    listing = Path(str(out)).with_suffix(".missing_videos.txt")
    if video_root is not None:
        report.video_root = str(video_root)
    if report.video_root_exists:
        report.videos_found, report.videos_missing, report.questions_without_video = video_coverage(
            prepared.records, benchmark, video_root, video_map)
    if report.videos_missing:
        write_text_atomic(listing, "".join(f"{v}\n" for v in report.videos_missing))
        report.missing_list = str(listing)
    elif listing.exists():
        listing.unlink()  # an earlier run's list, no longer true
    return report


def main(argv: list[str] | None = None) -> int:
    sheets = "\n".join(f"  {name:<15} {spec.sheet}" for name, spec in sorted(BENCHMARKS.items()))
    parser = argparse.ArgumentParser(prog="dyto prepare", description="Raw QA sheet -> canonical JSONL records.",
                                     epilog=f"what --qa-file expects:\n{sheets}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument("--qa-file", required=True, help="the benchmark's QA sheet (see below; may be gzipped)")
    parser.add_argument("--out", required=True, help="output JSONL file")
    parser.add_argument("--video-root", help="check that every record's video is found here (the missing ones "
                        "are listed in <out>.missing_videos.txt)")
    parser.add_argument("--video-map", help="NExT-QA map_vid_vidorID.json for a nested video folder")
    args = parser.parse_args(argv)
    try:
        report = prepare(args.benchmark, args.qa_file, args.out, args.video_root, args.video_map)
    except (OSError, ValueError) as e:
        print(f"dyto prepare: error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
