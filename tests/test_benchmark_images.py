"""`benchmarks.images`: the image set, the report's arithmetic, and the contenders on the real module."""

from __future__ import annotations

import argparse
import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from benchmarks import harness, image_contenders, images
from pipelines.models import build_efficientnet

MODULE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), build_efficientnet.DEFAULT_HANDLE)


def _workdirs(tmp_path, names) -> dict[str, str]:
    """A workdir per contender, each holding the same embeddings (so every min cosine is 1)."""
    for name in names:
        os.makedirs(tmp_path / name)
        np.save(tmp_path / name / "embeddings.npy", np.eye(3, dtype=np.float32))
    return {name: str(tmp_path / name) for name in names}


def test_image_set_is_distinct_deterministic_and_photo_sized(tmp_path):
    paths = images.make_image_set(str(tmp_path / "a"), 12)
    again = images.make_image_set(str(tmp_path / "b"), 12)
    digests = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths]
    assert len(set(digests)) == 12
    assert digests == [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in again]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "JPEG" and images.LONG_SIDE[0] <= max(image.size) <= images.LONG_SIDE[1]


def test_summarize_takes_medians_and_reports_failures(tmp_path):
    workdirs = _workdirs(tmp_path, ("raw", "pipeline"))
    runs = {
        "raw": [{"images_per_s": r, "rows": 10, "decode_s": 0.05} for r in (50.0, 40.0, 60.0)],
        "pipeline": [
            {"images_per_s": 45.0, "rows": 10, "outside_inference_s": 0.03},
            {"error": "exit status 1"},
            {"images_per_s": 41.0, "rows": 10, "outside_inference_s": 0.05},
        ],
    }
    report = images.summarize(runs, workdirs)
    assert report["pipeline_mp_images_per_s"] is None and report["pipeline_mp_vs_raw"] is None
    assert report["raw_images_per_s"] == 50.0 and report["pipeline_images_per_s"] == 43.0
    # Paired by round: 45 / 50 and 41 / 60 (round 2 failed), median 0.7917.
    assert report["pipeline_vs_raw_per_round"] == pytest.approx([0.9, 41 / 60])
    assert report["pipeline_vs_raw"] == pytest.approx((0.9 + 41 / 60) / 2) and report["target"]["met"] is False
    assert report["pipeline_best_vs_raw"] == report["pipeline_vs_raw"] and report["target"]["best"] == "pipeline"
    assert report["target"]["met_by"] == []
    assert report["raw_decode_ms_per_image"] == pytest.approx(5.0)
    assert report["pipeline_outside_inference_ms_per_image"] == pytest.approx(4.0)
    assert report["min_cosine_pipeline_vs_raw"] == pytest.approx(1.0)
    assert report["errors"] == {"pipeline[1]": "exit status 1"}
    assert "   0.792 " in images.format_report(report) and "target vs raw >= 0.85: not met" in images.format_report(
        report
    )


def test_target_names_each_pipeline_configuration_that_meets_it(tmp_path):
    runs = {
        "raw": [{"images_per_s": 100.0, "rows": 10, "decode_s": 0.05}] * 3,
        "pipeline": [{"images_per_s": r, "rows": 10, "outside_inference_s": 0.01} for r in (80.0, 84.0, 90.0)],
        "pipeline_mp": [{"images_per_s": r, "rows": 10} for r in (86.0, 88.0, 70.0)],
        "pipeline_serial_decode": [
            {"images_per_s": r, "rows": 10, "outside_inference_s": 0.02} for r in (64.0, 70.0, 72.0)
        ],
        "raw_decoding": [{"images_per_s": r, "rows": 10} for r in (82.0, 91.0, 88.0)],
        "raw_side_by_side": [{"images_per_s": r, "rows": 10} for r in (95.0, 89.0, 93.0)],
    }
    report = images.summarize(runs, _workdirs(tmp_path, runs))
    assert report["pipeline_vs_raw"] == pytest.approx(0.84) and report["pipeline_mp_vs_raw"] == pytest.approx(0.86)
    assert report["pipeline_best_vs_raw"] == pytest.approx(0.86)
    assert report["parallel_decode_gain"] == pytest.approx(1.25)  # rounds: 80/64, 84/70, 90/72
    assert report["raw_decoding_vs_raw"] == pytest.approx(0.88) and "raw_decoding" not in report["target"]["met_by"]
    assert (
        report["raw_side_by_side_vs_raw"] == pytest.approx(0.93)
        and "raw_side_by_side" not in report["target"]["met_by"]
    )
    assert report["pipeline_serial_decode_outside_inference_ms_per_image"] == pytest.approx(2.0)
    assert report["target"] == {
        "vs_raw": 0.85,
        "best": "pipeline_mp",
        "met": True,
        "met_by": ["pipeline_mp"],
        "out_of_reach_without_beam": False,
    }
    # Beam's share, round by round: 80/95, 84/89, 90/93.
    assert report["pipeline_vs_raw_side_by_side_per_round"] == pytest.approx([80 / 95, 84 / 89, 90 / 93])
    assert report["pipeline_vs_raw_side_by_side"] == pytest.approx(84 / 89)
    text = images.format_report(report)
    assert "target vs raw >= 0.85: met by pipeline, 2 worker processes; best 0.860" in text
    assert "pipeline / raw loop, calls side by side (the same decoding and calls without Beam): 0.944" in text
    assert "below the target itself" not in text


def test_report_says_when_even_the_loop_without_beam_misses_the_target(tmp_path):
    runs = {
        "raw": [{"images_per_s": 100.0, "rows": 10, "decode_s": 0.05}] * 3,
        "pipeline": [{"images_per_s": r, "rows": 10, "outside_inference_s": 0.01} for r in (78.0, 80.0, 79.0)],
        "raw_side_by_side": [{"images_per_s": r, "rows": 10} for r in (84.0, 86.0, 83.0)],
    }
    workdirs = _workdirs(tmp_path, runs)
    report = images.summarize(runs, workdirs)
    assert report["raw_side_by_side_vs_raw"] == pytest.approx(0.84) and report["target"]["out_of_reach_without_beam"]
    assert report["pipeline_vs_raw_side_by_side"] == pytest.approx(80 / 86)  # rounds: 78/84, 80/86, 79/83
    assert (
        "the raw loop with calls side by side, which decodes as the pipeline does but without Beam, reached 0.840 "
        "of raw: below the target itself on this machine"
    ) in images.format_report(report)
    without_loop = images.summarize({n: runs[n] for n in ("raw", "pipeline")}, workdirs)
    assert without_loop["target"]["out_of_reach_without_beam"] is None
    assert without_loop["pipeline_vs_raw_side_by_side"] is None
    assert "calls side by side" not in images.format_report(without_loop)


def test_both_contenders_embed_the_same_pixels(tmp_path):
    if not os.path.isfile(os.path.join(MODULE, "module.json")):
        pytest.fail(f"{MODULE} is not built: run `make setup`")
    paths = images.make_image_set(str(tmp_path / "set"), 6)
    workdirs = {name: str(tmp_path / name) for name in image_contenders.CONTENDERS}
    for d in workdirs.values():
        os.makedirs(d)
    raw = image_contenders.raw(paths, MODULE, workdirs["raw"], batch_size=4, threads=None)
    decoding = image_contenders.raw_decoding(paths, MODULE, workdirs["raw_decoding"], batch_size=4, threads=None)
    assert decoding["rows"] == 6 and decoding["decode_s"] is None
    np.testing.assert_array_equal(
        *(np.load(os.path.join(workdirs[n], "embeddings.npy")) for n in ("raw", "raw_decoding"))
    )
    side = image_contenders.raw_side_by_side(paths, MODULE, workdirs["raw_side_by_side"], batch_size=4, threads=None)
    assert side["rows"] == 6 and side["decode_s"] is None  # two calls of 4 and 2 images, side by side, in order
    np.testing.assert_array_equal(
        *(np.load(os.path.join(workdirs[n], "embeddings.npy")) for n in ("raw", "raw_side_by_side"))
    )
    pipe = image_contenders.pipeline(paths, MODULE, workdirs["pipeline"], threads=None)
    serial = image_contenders.pipeline_serial_decode(paths, MODULE, workdirs["pipeline_serial_decode"], threads=None)
    assert (
        raw["rows"] == pipe["rows"] == 6 and pipe["counts"]["rows_embedded"] == serial["counts"]["rows_embedded"] == 6
    )
    assert (
        raw["seconds"] > 0
        and raw["decode_s"] > 0
        and pipe["seconds"] > 0
        and pipe["batch_size"] == build_efficientnet.CALL_BATCH_SIZE == 8
    )
    assert raw["cpu_s"] > 0 and 0 < raw["decode_cpu_s"] < raw["decode_s"] + 0.5 and raw["cores"] >= 1
    assert 0 < image_contenders.one_process_ceiling(raw) <= 1 and image_contenders.one_process_ceiling(decoding) is None
    report = images.summarize(
        {
            n: [{**r, "images_per_s": r["rows"] / r["seconds"]}]
            for n, r in (("raw", raw), ("pipeline", pipe), ("pipeline_serial_decode", serial))
        },
        workdirs,
    )
    assert report["min_cosine_pipeline_vs_raw"] > 0.99999 and report["errors"] == {}
    assert report["min_cosine_pipeline_serial_decode_vs_raw"] > 0.99999


def test_one_process_ceiling_adds_decoding_cpu_to_the_module_calls_over_the_cores(tmp_path):
    raw = {"rows": 100, "seconds": 10.0, "cpu_s": 18.0, "decode_s": 4.5, "decode_cpu_s": 4.0, "cores": 2}
    assert image_contenders.one_process_ceiling(raw) == pytest.approx(10 / 11)  # (18 + 4) / 2 = 11 s at best
    idle = {**raw, "cpu_s": 10.0, "decode_cpu_s": 8.0}  # one core idle: decoding fits in it
    assert image_contenders.one_process_ceiling(idle) == 1.0
    assert image_contenders.one_process_ceiling({**raw, "decode_cpu_s": None}) is None
    runs = {
        "raw": [{**raw, "images_per_s": 10.0}, {**raw, "cpu_s": 16.0, "images_per_s": 10.0}],
        "pipeline": [{"images_per_s": 8.0, "rows": 100, "outside_inference_s": 1.0}] * 2,
    }
    report = images.summarize(runs, _workdirs(tmp_path, runs))
    assert report["one_process_ceiling_vs_raw"] == pytest.approx(np.median([10 / 11, 1.0]))
    assert report["raw_cores_busy"] == pytest.approx(1.7) and report["raw_decode_cpu_ms_per_image"] == pytest.approx(
        40.0
    )
    assert (
        "one-process ceiling 0.955: raw's module calls keep 1.70 of 2 cores busy, and decoding takes 40.00 ms of CPU"
        in images.format_report(report)
    )


def test_unknown_contender_is_refused_naming_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        images.main(["--only", "raw,pipline"])
    assert exit_info.value.code == 2
    assert (
        "unknown contender(s) pipline; valid: raw, pipeline, pipeline_mp, pipeline_serial_decode, raw_decoding, "
        "raw_side_by_side"
    ) in capsys.readouterr().err


def test_report_names_the_machine_it_ran_on(tmp_path):
    args = argparse.Namespace(images=7, repeats=2, module="m")
    meta = images.machine_meta(args)
    assert meta["images"] == 7 and meta["repeats"] == 2 and meta["cores"] == os.cpu_count()
    assert meta["cpu"] and set(meta["cpu_features"]) >= {"avx512f", "avx512_bf16", "amx_bf16"}
    assert meta["versions"]["tensorflow"]
    import PIL

    assert meta["pillow"] in (f"Pillow {PIL.__version__}", f"Pillow-SIMD {PIL.__version__}")
    report = images.summarize({"raw": [{"error": "exit status 1"}]}, {})
    report["meta"] = meta
    header = images.format_report(report).splitlines()[:3]
    assert header[0].startswith("hub-embed image benchmark, ") and header[1].startswith(f"CPU: {meta['cpu']}")
    assert header[2] == f"images decoded and resized by {meta['pillow']}"


def test_host_steal_is_read_from_proc_stat_and_reported_per_run(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  4070914 59134 353710 3698479 32741 0 4047 28120 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    assert harness.steal_seconds(str(stat)) == 28120 / os.sysconf("SC_CLK_TCK")
    assert harness.steal_seconds(str(tmp_path / "absent")) is None
    stat.write_text("intr 1 2 3\n")
    assert harness.steal_seconds(str(stat)) is None
    runs = {
        "raw": [
            {"images_per_s": 100.0, "rows": 10, "decode_s": 0.05, "steal_s": 0.0},
            {"images_per_s": 90.0, "rows": 10, "decode_s": 0.05, "steal_s": 2.5},
        ],
        "pipeline": [
            {"images_per_s": 80.0, "rows": 10, "outside_inference_s": 0.01, "steal_s": 0.25},
            {"error": "exit status 1"},
        ],
    }
    text = images.format_report(images.summarize(runs, {}))
    assert "(steal) during each contender process, start-up included: raw 0.0, 2.5; pipeline 0.2, -" in text
    assert "steal" not in images.format_report(images.summarize({"raw": [{"error": "exit status 1"}]}, {}))
