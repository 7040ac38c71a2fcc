"""Video path resolution: extension probing, ActivityNet's v_ prefix, NExT-QA's nested folders."""

from __future__ import annotations

import json

import pytest

from dyto.datamodules.paths import VideoError, resolve_video, resolver_for
from dyto.records import QARecord


def rec(benchmark: str, video: str) -> QARecord:
    return QARecord(id="q", benchmark=benchmark, task="open_ended", video=video, question="?", answer="!")


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_extension_probing_and_exact_names(tmp_path):
    avi = touch(tmp_path / "bQJQGoJF7_k_162_169.avi")
    gif = touch(tmp_path / "tumblr_abc_250.gif")
    webm = touch(tmp_path / "v_x1.webm")
    assert resolve_video(tmp_path, rec("msvd_qa", "bQJQGoJF7_k_162_169")) == avi
    assert resolve_video(tmp_path, rec("tgif_qa", "tumblr_abc_250")) == gif
    assert resolve_video(tmp_path, rec("activitynet_qa", "v_x1")) == webm
    # a stored name with an extension is tried as is first, then with the other extensions
    assert resolve_video(tmp_path, rec("msvd_qa", "bQJQGoJF7_k_162_169.mp4")) == avi
    mp4 = touch(tmp_path / "bQJQGoJF7_k_162_169.mp4")
    assert resolve_video(tmp_path, rec("msvd_qa", "bQJQGoJF7_k_162_169")) == mp4


def test_v_prefix_both_ways_only_for_activitynet_and_vcgbench(tmp_path):
    with_v = touch(tmp_path / "v_abc.mp4")
    touch(tmp_path / "def.mkv")
    assert resolve_video(tmp_path, rec("activitynet_qa", "abc")) == with_v
    assert resolve_video(tmp_path, rec("vcgbench", "v_def")) == tmp_path / "def.mkv"
    with pytest.raises(VideoError) as e:
        resolve_video(tmp_path, rec("msvd_qa", "abc"))
    assert e.value.status == "video_missing" and "'abc'" in e.value.message and str(tmp_path) in e.value.message


def test_nextqa_nested_via_map_file_or_scan(tmp_path):
    nested = touch(tmp_path / "0101" / "2909445186.mp4")
    assert resolve_video(tmp_path, rec("nextqa", "2909445186.mp4")) == nested  # scan without a map
    (tmp_path / "map_vid_vidorID.json").write_text(json.dumps({"2909445186": "0101/2909445186"}))
    moved = touch(tmp_path / "elsewhere" / "2909445186.mp4")
    assert resolve_video(tmp_path, rec("nextqa", "2909445186.mp4")) == nested  # the map wins over a scan
    other_map = tmp_path / "m.json"
    other_map.write_text(json.dumps({"2909445186": "elsewhere/2909445186"}))
    assert resolver_for("nextqa", tmp_path, other_map)(rec("nextqa", "2909445186.mp4")) == moved
    flat = touch(tmp_path / "2909445186.mp4")
    assert resolve_video(tmp_path, rec("nextqa", "2909445186.mp4")) == flat  # a flat copy is found first
    with pytest.raises(FileNotFoundError):
        resolver_for("nextqa", tmp_path, tmp_path / "absent.json")


def test_frame_image_directory(tmp_path):
    touch(tmp_path / "clip7" / "00001.jpg")
    (tmp_path / "emptydir").mkdir()
    assert resolve_video(tmp_path, rec("msvd_qa", "clip7")) == tmp_path / "clip7"
    with pytest.raises(VideoError):
        resolve_video(tmp_path, rec("msvd_qa", "emptydir"))
