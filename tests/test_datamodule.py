"""VideoQADataModule: batches in the documented format, failures as status records, resume, Lightning."""

from __future__ import annotations

import shutil

import lightning as L
import pytest
import torch
from torch.utils.data import SequentialSampler

from dyto.datamodules.base import BATCH_KEYS, RankShardSampler, VideoQADataModule
from dyto.datamodules.preprocess import Preprocessing
from dyto.datamodules.video import CLIP_MEAN, preprocess_frames, sample_frame_indices
from dyto.records import QARecord, write_jsonl
from videos_util import write_video


def qa(id_: str, video: str, benchmark: str = "msvd_qa", **kw) -> QARecord:
    return QARecord(id=id_, benchmark=benchmark, task="open_ended", video=video, question="q?", answer="a", **kw)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dm")
    videos = root / "videos"
    videos.mkdir()
    write_video(videos / "clipA.mp4", 90)
    (videos / "bad.mp4").write_text("not a video")
    records = [qa("a", "clipA"), qa("b", "clipA.mp4", start=1.0, end=2.0), qa("c", "nope"), qa("d", "bad"),
               qa("e", "clipA")]
    path = root / "qa.jsonl"
    write_jsonl(path, (r.to_dict() for r in records))
    return {"root": root, "videos": videos, "records": path}


def make(data, **kw) -> VideoQADataModule:
    args = dict(video_root=str(data["videos"]), batch_size=3, num_workers=0, num_frames=8, image_size=28)
    dm = VideoQADataModule(str(data["records"]), **{**args, **kw})
    dm.setup("predict")
    return dm


def test_batches_carry_every_record_with_its_status(data):
    batches = list(make(data).predict_dataloader())
    assert [len(b["ids"]) for b in batches] == [3, 2]
    assert all(set(b) - {"upcoming"} == set(BATCH_KEYS) for b in batches)
    assert all(len({len(b[k]) for k in BATCH_KEYS}) == 1 for b in batches)
    flat = {k: [x for b in batches for x in b[k]] for k in BATCH_KEYS}
    assert flat["ids"] == ["a", "b", "c", "d", "e"]
    assert flat["status"] == ["ok", "ok", "video_missing", "video_unreadable", "ok"]
    assert flat["records"][2]["video"] == "nope" and "'nope'" in flat["error"][2]
    assert "bad.mp4" in flat["error"][3] and flat["error"][0] == ""
    assert flat["pixel_values"][2] is None and flat["pixel_values"][3] is None
    assert flat["pixel_values"][0].shape == (8, 3, 28, 28) and flat["pixel_values"][0].dtype == torch.float32
    assert flat["frame_indices"][0] == sample_frame_indices(90, 8) and flat["frames_total"][0] == 90
    assert flat["frame_indices"][1] == [30 + i for i in sample_frame_indices(31, 8)]  # the record's window
    assert all(ms >= 0 for ms in flat["decode_ms"])


@pytest.mark.parametrize("workers", [0, 2])
def test_each_batch_but_the_last_carries_the_next_ones_frames(data, workers):
    dm = make(data, batch_size=2, num_workers=workers)
    loader = dm.predict_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 3 and [i for b in batches for i in b["ids"]] == list("abcde")
    for batch, following in zip(batches, batches[1:]):
        upcoming = batch["upcoming"]
        assert upcoming.ids == following["ids"]
        assert all(u is p for u, p in zip(upcoming.pixel_values, following["pixel_values"]))  # a handle, no copy
    assert "upcoming" not in batches[-1]
    assert list(make(data, limit=0).predict_dataloader()) == []


def test_workers_give_the_same_batches(data):
    one = list(make(data).predict_dataloader())
    two = list(make(data, num_workers=2).predict_dataloader())
    assert [b["ids"] for b in one] == [b["ids"] for b in two]
    assert [b["status"] for b in one] == [b["status"] for b in two]
    assert torch.equal(one[0]["pixel_values"][0], two[0]["pixel_values"][0])


def test_skip_ids_and_limit(data):
    dm = make(data, limit=4)
    dm.skip_ids = {"a", "c"}
    loader = dm.predict_dataloader()
    assert isinstance(loader.sampler, RankShardSampler)  # batch_size 3: data.order auto = length, one rank
    assert [i for b in loader for i in b["ids"]] == ["b", "d"]
    assert dm.input_ids() == ["a", "b", "c", "d"]
    plain = make(data, limit=4, order="input")
    plain.skip_ids = {"a", "c"}
    assert isinstance(plain.predict_dataloader().sampler, SequentialSampler)
    assert [i for b in plain.predict_dataloader() for i in b["ids"]] == ["b", "d"]


def test_only_found_videos_leaves_out_the_missing_ones_before_limit(data, capsys):
    dm = make(data, limit=3, only_found_videos=True)
    assert dm.input_ids() == ["a", "b", "d"]  # "c" has no video; "d"'s is there (unreadable: decoded later)
    assert f"4 of 5 questions have their video under {data['videos']}; the other 1 are left out" in capsys.readouterr().out
    statuses = {i: s for b in dm.predict_dataloader() for i, s in zip(b["ids"], b["status"])}
    assert statuses == {"a": "ok", "b": "ok", "d": "video_unreadable"}
    assert dm.fingerprint()["only_found_videos"] is True
    assert "only_found_videos" not in make(data).fingerprint()  # the default keeps earlier digests


class Probe(L.LightningModule):
    """Stands in for the model: declares how many frames it wants and echoes what it got."""

    num_frames, image_size, image_mean, image_std = 4, 14, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def __init__(self):
        super().__init__()
        self.upcoming = []

    def predict_step(self, batch, batch_idx):
        self.upcoming.append(batch["upcoming"].ids if "upcoming" in batch else None)
        return [(i, s, None if p is None else tuple(p.shape)) for i, s, p in
                zip(batch["ids"], batch["status"], batch["pixel_values"])]


def test_settings_come_from_the_model_under_a_real_trainer(data):
    dm = VideoQADataModule(str(data["records"]), video_root=str(data["videos"]), batch_size=2, num_workers=0)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    probe = Probe()
    out = [x for batch in trainer.predict(probe, datamodule=dm) for x in batch]
    # Lightning rebuilt the loader (it wraps the batch sampler) and kept the look-ahead
    assert probe.upcoming == [["c", "d"], ["e"], None]
    assert (dm.num_frames, dm.image_size, dm.image_mean) == (4, 14, (0.5, 0.5, 0.5))
    assert out == [("a", "ok", (4, 3, 14, 14)), ("b", "ok", (4, 3, 14, 14)), ("c", "video_missing", None),
                   ("d", "video_unreadable", None), ("e", "ok", (4, 3, 14, 14))]


def test_no_frame_count_is_an_error(data):
    with pytest.raises(ValueError, match="num_frames"):
        VideoQADataModule(str(data["records"])).setup("predict")


def test_benchmark_rules_come_from_the_registry(data, tmp_path):
    with pytest.raises(ValueError, match="not 'nextqa'"):
        VideoQADataModule(str(data["records"]), benchmark="nextqa", num_frames=4).setup("predict")
    with pytest.raises(ValueError, match=r"unknown benchmark 'next_qa'; known benchmarks: .*nextqa"):
        VideoQADataModule(str(data["records"]), benchmark="next_qa")
    # ActivityNet's rule finds v_<id> files for ids stored without the prefix
    shutil.copy(data["videos"] / "clipA.mp4", tmp_path / "v_xyz.mp4")
    path = tmp_path / "anet.jsonl"
    write_jsonl(path, [qa("x", "xyz", benchmark="activitynet_qa").to_dict()])
    dm = VideoQADataModule(str(path), benchmark="activitynet_qa", video_root=str(tmp_path), num_workers=0,
                           num_frames=3, image_size=14)
    dm.setup("predict")
    sample = dm.predict_dataset()[0]
    assert sample["status"] == "ok" and sample["frame_indices"] == sample_frame_indices(90, 3)
    # a task the benchmark does not have is refused, naming the record
    write_jsonl(path, [qa("y", "xyz", benchmark="nextqa").to_dict()])
    with pytest.raises(ValueError, match=r"record 'y' has task 'open_ended'.*\('multiple_choice',\)"):
        VideoQADataModule(str(path), benchmark="nextqa", num_frames=3).setup("predict")


def test_old_per_benchmark_class_names_still_resolve(data, tmp_path):
    import pickle

    import dyto.datamodules as dm_pkg

    shutil.copy(data["videos"] / "clipA.mp4", tmp_path / "v_xyz.mp4")
    path = tmp_path / "anet.jsonl"
    write_jsonl(path, [qa("x", "xyz", benchmark="activitynet_qa").to_dict()])
    cls = dm_pkg.ActivityNetQADataModule
    assert cls is dm_pkg.ActivityNetQADataModule and issubclass(cls, VideoQADataModule)
    assert cls.benchmark == "activitynet_qa" and VideoQADataModule.benchmark is None  # as the old subclasses
    assert pickle.loads(pickle.dumps(cls)) is cls
    dm = cls(str(path), video_root=str(tmp_path), num_workers=0, num_frames=3, image_size=14)
    assert dm.benchmark == "activitynet_qa" and dm.predict_dataset()[0]["status"] == "ok"
    with pytest.raises(ValueError, match="not 'nextqa'"):
        dm_pkg.NExTQADataModule(str(data["records"]), num_frames=4).setup("predict")


class Backbone(L.LightningModule):
    """A module exposing the backbone seam: a ``Preprocessing`` (and no image_* attributes)."""

    num_frames = 5

    def __init__(self, preprocessing: Preprocessing):
        super().__init__()
        self.preprocessing = preprocessing


def attach(dm: VideoQADataModule, module: L.LightningModule) -> VideoQADataModule:
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    trainer.strategy.connect(module)
    dm.trainer = trainer
    dm.setup("predict")
    return dm


def test_preprocessing_comes_from_the_model_and_is_applied_in_the_workers(data):
    pre = Preprocessing(size=(21, 21), mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
    dm = attach(VideoQADataModule(str(data["records"]), video_root=str(data["videos"]), num_workers=2), Backbone(pre))
    assert dm.preprocessing == pre and dm.num_frames == 5 and (dm.image_size, dm.image_mean) == (21, pre.mean)
    batch = next(iter(dm.predict_dataloader()))
    from dyto.datamodules.video import decode_video

    frames = decode_video(data["videos"] / "clipA.mp4", 5).frames
    assert torch.equal(batch["pixel_values"][0], preprocess_frames(frames, 21, pre.mean, pre.std))
    # an image_size given to the DataModule overrides that one field of the model's preprocessing
    dm = attach(VideoQADataModule(str(data["records"]), num_workers=0, image_size=14), Backbone(pre))
    assert dm.preprocessing == Preprocessing((14, 14), mean=pre.mean, std=pre.std)


@pytest.mark.parametrize("asked, per_patch, sampled", [(5, 1, 5), (5, 2, 6), (6, 2, 6), (7, 4, 8)])
def test_frame_count_is_rounded_up_to_whole_temporal_patches(data, asked, per_patch, sampled):
    dm = attach(VideoQADataModule(str(data["records"]), video_root=str(data["videos"]), num_workers=0,
                                  num_frames=asked, image_size=14), Backbone(Preprocessing(frames_per_patch=per_patch)))
    assert dm.num_frames == sampled
    assert dm.predict_dataset()[0]["pixel_values"].shape == (sampled, 3, 14, 14)


def test_fingerprint_names_the_benchmark_and_the_preprocessing(data):
    dm = make(data)
    fp = dm.fingerprint()
    assert fp["benchmark"] == "msvd_qa"  # the records' registered benchmark
    assert fp["preprocessing"] == Preprocessing((28, 28)).config() and fp["num_frames"] == 8
    assert fp["preprocessing"]["mean"] == list(CLIP_MEAN)
    other = make(data, image_size=14, benchmark="msvd_qa").fingerprint()
    assert other["preprocessing"]["size"] == [14, 14] and other["records_sha256"] == fp["records_sha256"]


def test_a_benchmark_frame_count_applies_when_neither_the_datamodule_nor_the_model_gives_one(data, tmp_path):
    from dyto.datamodules.benchmarks import BenchmarkSpec, register_benchmark, unregister_benchmark

    register_benchmark(BenchmarkSpec(name="fixed_frames", tasks=("open_ended",), prepare=lambda path: None,
                                     num_frames=7))
    try:
        path = tmp_path / "fixed.jsonl"
        write_jsonl(path, [qa("x", "clipA", benchmark="fixed_frames").to_dict()])
        args = dict(video_root=str(data["videos"]), num_workers=0, image_size=14)
        dm = VideoQADataModule(str(path), benchmark="fixed_frames", **args)
        dm.setup("predict")
        assert dm.num_frames == 7 and dm.predict_dataset()[0]["pixel_values"].shape[0] == 7
        assert attach(VideoQADataModule(str(path), **args), Backbone(Preprocessing())).num_frames == 5  # the model's
        dm = VideoQADataModule(str(path), num_frames=3, **args)
        dm.setup("predict")
        assert dm.num_frames == 3  # given: wins
    finally:
        unregister_benchmark("fixed_frames")
