"""The Lightning side of the data: canonical records in, batches of decoded frames out.

Every record becomes exactly one batch entry, whatever happens to its video: a missing or
unreadable video yields `status`/`error` and `pixel_values=None`, so the model writes a failure
record for it instead of the question silently vanishing (as it does in the reference runners).

One DataModule serves every benchmark: ``VideoQADataModule(records, benchmark="nextqa", ...)``
takes the benchmark's rules (video naming, tasks, default frames) from its registered spec
(``dyto.datamodules.benchmarks``), where there used to be one empty subclass per benchmark.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dyto.datamodules.benchmarks import BENCHMARKS, BenchmarkSpec, find_benchmark, get_benchmark
from dyto.datamodules.paths import VideoError, VideoResolver, resolver_for
from dyto.datamodules.preprocess import Preprocessing
from dyto.datamodules.video import SAMPLING_RULES, decode_video
from dyto.errors import ConfigError, RecordsError, check
from dyto.records import QARecord, file_sha256, read_qa_records

BATCH_KEYS = ("ids", "records", "pixel_values", "frame_indices", "frames_total", "status", "error", "decode_ms",
              "fps")


class VideoQADataset(Dataset):
    """Decodes and preprocesses in `__getitem__` (i.e. in DataLoader workers); never raises for a video.

    ``preprocessing`` is the backbone's ``Preprocessing`` (picklable, so workers carry it). The
    older positional form ``(records, resolver, num_frames, image_size, image_mean, image_std)``
    still works and means ``Preprocessing((image_size, image_size), mean=image_mean, std=image_std)``.
    """

    def __init__(self, records: list[QARecord], resolver: VideoResolver, num_frames: int,
                 preprocessing: Preprocessing | int, image_mean: tuple[float, ...] | None = None,
                 image_std: tuple[float, ...] | None = None, backend: str = "auto", sampling: str = "reference",
                 decode_timeout_s: float = 120.0) -> None:
        check("num_frames", num_frames, ">=1")  # 0 frames never reach the decoder
        if not isinstance(preprocessing, Preprocessing):  # the older (image_size, image_mean, image_std) form
            defaults = Preprocessing()
            preprocessing = Preprocessing((preprocessing, preprocessing), mean=image_mean or defaults.mean,
                                          std=image_std or defaults.std)
        self.records = records
        self.resolver = resolver
        self.num_frames, self.preprocessing = num_frames, preprocessing
        self.backend, self.sampling, self.decode_timeout_s = backend, sampling, decode_timeout_s

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        sample: dict[str, Any] = {"id": rec.id, "record": rec.to_dict(), "pixel_values": None, "frame_indices": [],
                                  "frames_total": 0, "status": "ok", "error": "", "decode_ms": 0.0, "fps": 0.0}
        t0 = time.perf_counter()
        try:
            window = (rec.start, rec.end) if rec.start is not None and rec.end is not None else None
            video = decode_video(self.resolver(rec), self.num_frames, backend=self.backend, window=window,
                                 method=self.sampling, timeout_s=self.decode_timeout_s,
                                 image_fps=float(rec.meta.get("frame_fps") or 0.0))  # frame folders (MVBench)
            sample["pixel_values"] = self.preprocessing(video.frames, total_frames=video.total_frames,
                                                        fps=video.fps)  # [T,3,H',W'] float
            sample["frame_indices"], sample["frames_total"] = video.indices, video.total_frames
            sample["fps"] = float(video.fps or 0.0)  # frame times (Qwen3-VL writes them into the prompt)
        except VideoError as e:
            sample["status"], sample["error"] = e.status, e.message
        except Exception as e:  # anything else about this one video must not end the run either
            sample["status"], sample["error"] = "video_unreadable", f"{rec.video}: {type(e).__name__}: {e}"
        sample["decode_ms"] = (time.perf_counter() - t0) * 1000.0
        return sample


def collate(samples: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """A dict of equal-length lists (docs/internals.md); frames stay per sample, as T may differ."""
    single = {"ids": "id", "records": "record"}
    return {key: [s[single.get(key, key)] for s in samples] for key in BATCH_KEYS}


class UpcomingBatch:
    """The next batch's frames, riding along with the current batch as ``batch["upcoming"]``.

    The model may start encoding them while it is still generating the current answers (see
    ``DyToVideoQA(encode_ahead=...)``). A plain class on purpose: Lightning's batch transfer
    recurses into dicts, lists and dataclasses, and leaves this where it is.
    """

    __slots__ = ("ids", "pixel_values")

    def __init__(self, batch: dict[str, list[Any]]) -> None:
        self.ids: list[str] = list(batch["ids"])
        self.pixel_values: list[Any] = list(batch["pixel_values"])  # FloatTensor [T,3,S,S] or None

    def __repr__(self) -> str:
        return f"UpcomingBatch(ids={self.ids!r})"


class LookaheadDataLoader(DataLoader):
    """A DataLoader that hands out each batch once the following one is loaded too, and attaches
    ``UpcomingBatch(following)`` to it under ``"upcoming"`` (the last batch has no such key).

    Batches, their order and their count are exactly the DataLoader's; one more batch is held in
    memory. Lightning rebuilds predict loaders from their ``__init__`` arguments, and this class
    keeps DataLoader's, so it survives that.
    """

    def __iter__(self):
        batches = super().__iter__()
        current = next(batches, None)
        if current is None:
            return
        for following in batches:
            current["upcoming"] = UpcomingBatch(following)
            yield current
            current = following
        yield current


class RankShardSampler(DistributedSampler):
    """Rank r of w predicts items r, r+w, r+2w, ... of ``order`` (default: input order): no padding,
    no duplicates, and a rank may get none. Lightning's own predict sampler does the same but
    asserts when there are fewer items than ranks (a resumed run with a few questions left);
    Lightning leaves a DistributedSampler subclass in place.

    Dealing a length-sorted ``order`` round-robin gives every rank a shard sorted by length with
    the same spread of lengths (balanced ranks) and pools of similar lengths."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, order: list[int] | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        order = list(range(len(dataset))) if order is None else list(order)
        if sorted(order) != list(range(len(dataset))):
            raise ValueError(f"order must be a permutation of the dataset's {len(dataset)} indices")
        self.shard = order[rank::num_replicas]

    def __iter__(self):
        return iter(self.shard)

    def __len__(self) -> int:
        return len(self.shard)


QUESTION_ORDERS = ("auto", "input", "length")
DECODE_BACKENDS = ("auto", "decord", "pyav", "gif")  # video.decode_video


def read_benchmark_records(path: str | os.PathLike, spec: BenchmarkSpec | None) -> list[QARecord]:
    """The QA records of ``path`` (``read_qa_records``: every row checked), and with a ``spec`` all
    of its benchmark and tasks; ``RecordsError`` naming the file (and line) otherwise."""
    records = read_qa_records(path)
    if spec is not None:
        wrong = [r.id for r in records if r.benchmark != spec.name]
        if wrong:
            raise RecordsError(path, None, f"{len(wrong)} records are not {spec.name!r} (first: {wrong[0]!r}); "
                               "set data.benchmark to their benchmark")
        odd = [r for r in records if r.task not in spec.tasks]
        if odd:
            raise RecordsError(path, None, f"record {odd[0].id!r} has task {odd[0].task!r}, which benchmark "
                               f"{spec.name!r} does not have (its tasks: {spec.tasks})")
    return records


def question_length(record: QARecord) -> int:
    """Characters of the text a record puts into its prompt(s): question, second question, options.

    A proxy for the prompt's token count that is known before any video is decoded and needs no
    tokenizer: the template text around it is the same for every question of a task, and the
    visual tokens are a fixed count at a fixed reducer budget (only a few reducers vary them).
    The model still groups by exact token counts inside each pool (``model.batch_order``)."""
    return len(record.question) + len(record.question2 or "") + sum(len(o) for o in record.options or ())


def length_order(records: list[QARecord]) -> list[int]:
    """Indices of ``records`` by :func:`question_length`, shortest first; ties keep input order."""
    return sorted(range(len(records)), key=lambda i: question_length(records[i]))


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask; the machine's count elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


MAX_AUTO_WORKERS = 16


def auto_num_workers(cpus: int, local_ranks: int) -> int:
    """Decoding workers per rank: the cores a rank gets, one left for its main process, at most
    ``MAX_AUTO_WORKERS``; 0 (decode in the main process) on a one-core share."""
    share = cpus // max(local_ranks, 1)
    return max(0, min(MAX_AUTO_WORKERS, share - 1))


def auto_prefetch_factor(batch_size: int) -> int:
    """Batches each worker loads ahead: 2 (PyTorch's default) for small batches, 1 from 8
    questions up, where one batch per worker (plus the model's look-ahead batch) already keeps
    several seconds of work queued and 100-frame batches cost ~135 MB of pixels per question."""
    return 2 if batch_size < 8 else 1


def check_settings(**settings: Any) -> None:
    """``ConfigError`` naming the first of the DataModule's ``settings`` it cannot run with: frames,
    sizes and batches >= 1, workers and limit >= 0 (or ``auto``), a timeout > 0, known names."""
    for key, value in settings.items():
        rule = {"num_workers": ">=0", "limit": ">=0", "decode_timeout_s": ">0", "backend": DECODE_BACKENDS,
                "sampling": SAMPLING_RULES, "order": QUESTION_ORDERS}.get(key, ">=1")
        check(key, value, rule, optional=key in ("num_frames", "image_size", "limit", "sampling"),
              also=("auto",) if key in ("num_workers", "prefetch_factor") else ())


class VideoQADataModule(L.LightningDataModule):
    """Predict-only DataModule over a canonical JSONL file, for any registered benchmark.

    Args:
        records: the JSONL written by ``dyto prepare``.
        video_root: the folder holding the benchmark's videos (looked up by the benchmark's naming
            rule, as ``dyto prepare --video-root`` checks them); a record's video may also be an
            absolute path.
        video_map: NExT-QA's ``map_vid_vidorID.json``, for its nested ``<folder>/<video>.mp4`` release.
        limit: predict only the first N questions of the records file (after
            ``only_found_videos``); None: all of them.
        only_found_videos: True: leave out, before ``limit``, every question whose video is not
            found under ``video_root`` (the count is printed), so ``limit`` N means N answerable
            questions; such a run is not the benchmark's full set. In the fingerprint. False
            (default): every question is predicted, a missing video ending as ``video_missing``.
        benchmark: a registered benchmark name (``dyto.datamodules.benchmarks``): its video naming
            rule, its tasks (records of another benchmark or task are refused) and its default
            frame count. None (the demo, hand-written records): the records' own benchmark's rules
            if it is registered, else the plain rule, and no check.
        preprocessing: how frames become pixels. None: the attached LightningModule's
            ``preprocessing`` attribute, or for a module without one a ``Preprocessing`` built from
            its ``image_size`` / ``image_mean`` / ``image_std`` (336, CLIP's when it has none).
            ``image_size`` / ``image_mean`` / ``image_std`` given here override those fields.
        image_size: square side in pixels, overriding the preprocessing's (None: keep it).
        image_mean: per-channel mean, overriding the preprocessing's (None: keep it).
        image_std: per-channel std, overriding the preprocessing's (None: keep it).
        backend: video decoder: ``"auto"`` (decord when importable, PyAV when it fails on a file),
            ``"decord"`` or ``"pyav"``.
        sampling: how frames are picked (``video.SAMPLING_RULES``). None: the model's ``sampling``
            attribute (under ``protocol: lmms_eval``, the backbone's lmms-eval rule), else
            ``"reference"`` (SF-LLaVA's ``get_seq_frames``).
        decode_timeout_s: seconds one video may take to decode before it is ``video_unreadable``.
        pin_memory: pin decoded frames for the copy to the GPU; None: when CUDA is available.
        num_frames: None: the model's ``num_frames`` (its reducer's: the one source of truth), else
            the benchmark spec's. When ``preprocessing.frames_per_patch`` is k > 1, the count is
            rounded UP to a multiple of k (a backbone folding k frames into one temporal patch
            needs whole patches; rounding up never samples fewer frames than asked for).
        batch_size: questions per batch: the pool the model cuts length-aware generation groups
            from (configs/trainer/gpu.yaml and ddp.yaml set 16; 1 elsewhere). On a GPU it can
            change greedy answers (fp16 rounding of a padded batch), so it is in the fingerprint.
        num_workers: decoding processes; ``"auto"`` (default) = the cores this process may use,
            divided among the ranks of this machine, minus one (``auto_num_workers``).
        prefetch_factor: batches each worker loads ahead; ``"auto"`` = ``auto_prefetch_factor``
            (2 below 8 questions per batch, else 1). Ignored without workers.
        order: the order questions are predicted (and pooled) in. ``"input"``: the records file's
            (dealt round-robin to the ranks); ``"length"``: sorted by :func:`question_length`
            before dealing, so each pool holds questions of similar length and generation groups
            need little left padding; ``"auto"`` (default): ``"length"`` when ``batch_size`` > 1,
            else ``"input"`` (one question per batch: the order cannot change an answer). Output
            files are in input order either way. In the fingerprint (it decides the pools).

    Everything is resolved in ``setup()``; afterwards ``num_frames``, ``preprocessing`` and the
    ``image_*`` attributes hold what the workers use. ``skip_ids`` (set by the resume logic)
    drops finished questions; ``limit`` cuts the records to their first N.
    """

    # The per-benchmark class names of older configs (dyto.datamodules.NExTQADataModule, ...) are
    # aliases that preset this class attribute, as those subclasses did; a `benchmark` argument wins.
    benchmark: str | None = None

    def __init__(self, records: str, benchmark: str | None = None, video_root: str | None = None,
                 batch_size: int = 1, num_workers: int | str = "auto", num_frames: int | None = None,
                 preprocessing: Preprocessing | None = None, image_size: int | None = None,
                 image_mean: tuple[float, float, float] | None = None,
                 image_std: tuple[float, float, float] | None = None, backend: str = "auto",
                 sampling: str | None = None, decode_timeout_s: float = 120.0, limit: int | None = None,
                 video_map: str | None = None, pin_memory: bool | None = None,
                 prefetch_factor: int | str = "auto", order: str = "auto", only_found_videos: bool = False) -> None:
        super().__init__()
        # a resumed run may have fewer questions left than ranks: a rank with none just waits
        self.allow_zero_length_dataloader_with_multiple_devices = True
        self.benchmark = benchmark if benchmark is not None else type(self).benchmark
        self.spec  # an unknown name fails here, listing the known ones
        self.records_path, self.video_root, self.video_map = records, video_root, video_map
        check_settings(batch_size=batch_size, num_workers=num_workers, num_frames=num_frames, image_size=image_size,
                       backend=backend, sampling=sampling, decode_timeout_s=decode_timeout_s, limit=limit,
                       prefetch_factor=prefetch_factor, order=order)
        self.order = order
        self.batch_size, self.num_workers, self.prefetch_factor = batch_size, num_workers, prefetch_factor
        self.num_frames, self.preprocessing = num_frames, preprocessing
        self.image_size, self.image_mean, self.image_std = image_size, image_mean, image_std
        self.backend, self.sampling, self.decode_timeout_s, self.limit = backend, sampling, decode_timeout_s, limit
        self.only_found_videos = only_found_videos
        # pinned frames let the model copy them to the GPU without blocking (None: when CUDA is there)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.skip_ids: set[str] = set()
        self._records: list[QARecord] | None = None

    @property
    def spec(self) -> BenchmarkSpec | None:
        """The registered spec of ``benchmark`` (looked up, not stored: specs hold functions)."""
        return get_benchmark(self.benchmark) if self.benchmark is not None else None

    @property
    def records(self) -> list[QARecord]:
        """The records of the run: the file's, checked against the benchmark, cut to `limit`."""
        if self._records is None:
            records = read_benchmark_records(self.records_path, self.spec)
            if self.only_found_videos:
                records = self._found(records, self.spec)
            self._records = records if self.limit is None else records[: self.limit]
        return self._records

    def _found(self, records: list[QARecord], spec: BenchmarkSpec | None) -> list[QARecord]:
        """The records whose video the benchmark's rule finds under ``video_root`` (one lookup per video)."""
        rules = spec or (find_benchmark(records[0].benchmark) if records else None)
        resolve, found = resolver_for(rules.name if rules else None, self.video_root, self.video_map), {}
        for rec in records:
            if rec.video not in found:
                try:
                    resolve(rec)
                    found[rec.video] = True
                except VideoError:
                    found[rec.video] = False
        kept = [r for r in records if found[r.video]]
        if getattr(self.trainer, "is_global_zero", True):  # one line per run, not per rank
            print(f"[dyto] data.only_found_videos: {len(kept)} of {len(records)} questions have their video under "
                  f"{self.video_root}; the other {len(records) - len(kept)} are left out of this run")
        return kept

    def rules(self) -> BenchmarkSpec | None:
        """The spec whose rules apply: the given benchmark's, or the records' own when it is registered."""
        spec = self.spec
        if spec is not None:
            return spec
        return find_benchmark(self.records[0].benchmark) if self.records else None

    def input_ids(self) -> list[str]:
        """Ids of the run (after `limit`, before `skip_ids`): what the merged output is checked against."""
        return [r.id for r in self.records]

    def setup(self, stage: str | None = None) -> None:
        module = self.trainer.lightning_module if self.trainer is not None else None
        self.preprocessing = self._resolve_preprocessing(module)
        self.image_size, self.image_mean, self.image_std = (self.preprocessing.size[0], self.preprocessing.mean,
                                                            self.preprocessing.std)
        if self.num_frames is None and module is not None:
            self.num_frames = getattr(module, "num_frames", None)
        if self.sampling is None:
            self.sampling = getattr(module, "sampling", None) or "reference"
        rules = self.rules()
        if getattr(module, "protocol", "reference") == "lmms_eval" and (rules is None or rules.lmms_eval is None):
            known = ", ".join(sorted(n for n, s in BENCHMARKS.items() if s.lmms_eval is not None))
            name = rules.name if rules else (self.records[0].benchmark if self.records else self.benchmark)
            raise ConfigError("model.protocol", "lmms_eval", f"'reference' for benchmark {name!r}, which lmms-eval has "
                              f"no task for", f"lmms-eval tasks exist for: {known}; "
                              "dyto/assets/demo/questions_lmms_eval.jsonl holds demo questions as VideoMME rows")
        if self.num_frames is None and rules is not None:
            self.num_frames = rules.num_frames
        if self.num_frames is None:
            raise ValueError("num_frames is not set: pass it, or attach a model with a num_frames attribute")
        check("num_frames", self.num_frames, ">=1")  # never 0 frames into the decoder, wherever it came from
        k = self.preprocessing.frames_per_patch
        self.num_frames = math.ceil(self.num_frames / k) * k
        self.records  # read (and validate) now rather than in the first worker

    def _resolve_preprocessing(self, module: Any) -> Preprocessing:
        """Given > the model's ``preprocessing`` > the model's ``image_*`` attributes > 336 / CLIP;
        ``image_*`` given to the DataModule override the matching fields."""
        base = self.preprocessing or getattr(module, "preprocessing", None)
        if base is None:
            defaults = Preprocessing()
            size = getattr(module, "image_size", None)
            base = Preprocessing((size, size) if size else defaults.size,
                                 mean=getattr(module, "image_mean", None) or defaults.mean,
                                 std=getattr(module, "image_std", None) or defaults.std)
        if not isinstance(base, Preprocessing):
            raise TypeError(f"preprocessing must be a dyto.datamodules.preprocess.Preprocessing, "
                            f"got {type(base).__name__}")
        overrides: dict[str, Any] = {}
        if self.image_size is not None:
            overrides["size"] = (self.image_size, self.image_size)
        if self.image_mean is not None:
            overrides["mean"] = tuple(self.image_mean)
        if self.image_std is not None:
            overrides["std"] = tuple(self.image_std)
        return dataclasses.replace(base, **overrides) if overrides else base

    def fingerprint(self) -> dict:
        """Every data-side setting that can change an answer (after ``setup``): benchmark, frames,
        sampling, decoder, the preprocessing's ``config()``, and a digest of the records file (a
        changed question text or answer key is a different run)."""
        rules = self.rules()
        return {
            "records_sha256": file_sha256(self.records_path),
            "benchmark": self.benchmark if self.benchmark is not None else (rules.name if rules else None),
            "num_frames": self.num_frames,
            "sampling": self.sampling or "reference",
            "backend": self.backend,
            "decode_timeout_s": self.decode_timeout_s,
            "preprocessing": self.preprocessing.config() if self.preprocessing is not None else None,
            "batch_size": self.batch_size,
            "order": self.resolved_order(),
            **({"only_found_videos": True} if self.only_found_videos else {}),  # absent: every question
        }

    def resolved_order(self) -> str:
        """``order`` with ``"auto"`` resolved: ``"length"`` for pools of several questions."""
        if self.order != "auto":
            return self.order
        return "length" if self.batch_size > 1 else "input"

    def resolver(self) -> VideoResolver:
        """The benchmark's video naming rule (the plain rule for unregistered records)."""
        rules = self.rules()
        return resolver_for(rules.name if rules else None, self.video_root, self.video_map)

    def predict_dataset(self) -> VideoQADataset:
        if self.num_frames is None or self.preprocessing is None:
            self.setup("predict")
        todo = [r for r in self.records if r.id not in self.skip_ids]
        return VideoQADataset(todo, self.resolver(), self.num_frames, self.preprocessing, backend=self.backend,
                              sampling=self.sampling or "reference", decode_timeout_s=self.decode_timeout_s)

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        """Batches stay on the host: the model copies frames itself (``encode_frames``), so frames it
        encoded ahead are not copied a second time, and nothing else in a batch is a tensor."""
        return batch

    def predict_dataloader(self) -> LookaheadDataLoader:
        dataset = self.predict_dataset()
        trainer = getattr(self, "trainer", None)
        world = trainer.world_size if trainer is not None else 1
        order = length_order(dataset.records) if self.resolved_order() == "length" else None
        rank = trainer.global_rank if trainer is not None else 0
        sampler = RankShardSampler(dataset, world, rank, order) if world > 1 or order is not None else None
        workers, prefetch = self.loader_workers()
        return LookaheadDataLoader(dataset, batch_size=self.batch_size, shuffle=False, sampler=sampler,
                                   num_workers=workers, collate_fn=collate, pin_memory=self.pin_memory,
                                   prefetch_factor=prefetch if workers else None,
                                   persistent_workers=False)

    def loader_workers(self) -> tuple[int, int]:
        """(num_workers, prefetch_factor) with ``"auto"`` resolved for this machine and rank count."""
        trainer = getattr(self, "trainer", None)
        local_ranks = getattr(trainer, "num_devices", 1) if trainer is not None else 1
        workers = (auto_num_workers(available_cpus(), local_ranks) if self.num_workers == "auto"
                   else self.num_workers)
        prefetch = auto_prefetch_factor(self.batch_size) if self.prefetch_factor == "auto" else self.prefetch_factor
        return workers, prefetch
