"""``python -m facekit bench --quick``: it runs end to end and writes a complete report.

No timing thresholds: the figures depend on the machine and its load.  What is
checked is that every section ran, that every ratio is a positive finite number
measured against its reference, and that each target says whether it was met.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from facekit.bench import TARGETS
from facekit.paths import PROJECT_ROOT


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    env = dict(os.environ, FACEKIT_REPORTS=str(reports))
    run = subprocess.run([sys.executable, "-m", "facekit", "bench", "--quick"], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    path = reports / "bench.json"
    assert path.is_file(), f"bench wrote no {path}; stdout:\n{run.stdout[-2000:]}"
    return json.loads(path.read_text()), run.stdout


def test_machine_and_versions(quick_report):
    report, _ = quick_report
    assert report["mode"] == "quick"
    m = report["machine"]
    assert m["date"] and m["cpu"] and m["cores"] >= 1
    assert {"python", "torch", "mediapipe", "numpy", "facekit"} <= set(m["versions"])


def test_every_section_measured(quick_report):
    report, _ = quick_report
    pf = report["per_frame"]
    assert pf["faces_found_per_pass"] > 0
    assert set(pf["stages_ms"]) >= {"decode", "facemesh", "normalise", "model", "smoothing"}
    assert pf["frame_format"].startswith("jpeg") and pf["rgb"]["frame_format"].startswith("rgb")
    assert pf["yuv"]["frame_format"].startswith("yuv")
    assert set(pf["rgb"]["stages_ms"]) == set(pf["yuv"]["stages_ms"]) == set(pf["stages_ms"])
    # both references, each in the same passes: FaceMesh alone (mesh.process) and its graph alone (the lower one)
    for part in (pf, pf["yuv"], pf["rgb"]):
        assert part["facemesh_tracking_ms"] > 0 and part["facemesh_graph_ms"] > 0
        assert part["ratio_path_vs_tracking"] > 0 and part["ratio_path_vs_graph"] > 0
        # the kit's own time per frame is the path less FaceMesh alone, pass by pass (its sign is the machine's)
        per_pass = part["per_pass_ms"]
        diffs = sorted(p - t for p, t in zip(per_pass["path"], per_pass["facemesh_tracking"]))
        assert diffs[0] - 1e-3 <= part["own_ms"] <= diffs[-1] + 1e-3 and math.isfinite(part["own_ms"])
    assert {"per_frame_vs_facemesh_graph", "per_frame_yuv_vs_facemesh_graph",
            "per_frame_rgb_vs_facemesh_graph"} <= set(report["ratios"])
    ex = report["extraction"]
    assert set(ex["photos_per_second"]) == {"facemesh_alone", "facemesh_alone_full_size", "decode_alone", "kit", "kit_full_decode", "kit_draft_1000", "kit_remeasure_8",
                                            "original", "kit_1_worker_process", "kit_2_worker_processes"}
    assert 0 < ex["ceiling_photos_per_second"] < ex["photos_per_second"]["facemesh_alone"]
    assert ex["exif_rotated"] >= 1 and ex["faces_found"]["kit"] >= 1
    assert ex["faces_found"]["kit_remeasure_8"] == ex["faces_found"]["kit"]  # the first measurement finds the face
    tr = report["training"]
    assert tr["default_threads"] >= 1 and tr["cpu"]["threads"] == 1
    assert {"kit", "original_dataloader"} <= set(tr["cpu"])
    assert {"kit_default_threads", "kit_1_thread"} <= set(tr["threads"])
    assert "kit" in tr["cuda"] or "skipped" in tr["cuda"]
    mem = report["memory"]
    assert mem["extraction"]["10n"]["photos"] == 10 * mem["extraction"]["n"]["photos"]
    for key in ("n", "10n"):  # the second run of each found every photo in the cache it had just filled
        assert mem["extraction"][f"{key}_cached"]["from_cache"] == mem["extraction"][key]["photos"]
        assert mem["extraction"][key]["from_cache"] == 0
    assert ex["faces_found"]["facemesh_alone_full_size"] == ex["faces_found"]["facemesh_alone"] >= 1
    assert mem["training"]["peak_rss_mb"] > 0 and mem["cache_bytes_per_photo"] > 0
    assert "skipped" in report["server"] or report["server"]["errors"] == 0
    br = report["browser"]
    assert "failed" not in br, br["failed"]
    if "skipped" not in br:  # Chromium, ffmpeg and playwright are here (./kit test installs them): measured
        assert set(br["formats"]) == {"auto", "jpeg"}
        assert br["formats"]["auto"]["travelled_as"] == ["yuv"]  # the loopback page sends the camera's planes
        assert br["formats"]["jpeg"]["travelled_as"] == ["jpeg"]
        for fmt in br["formats"].values():
            assert fmt["fps"] > 0 and fmt["round_trip_ms"] > 0 and fmt["kernel_handler_ms"] > 0
            assert all(p["frames"] > 0 and p["with_face"] for p in fmt["passes"])
            assert {"decode", "facemesh", "normalise", "model", "smoothing"} <= set(fmt["kernel_stages_ms"])
        assert {"decode", "facemesh", "normalise", "model", "smoothing"} <= set(br["kernel_latency_ms"])
        assert {"browser_default_fps_vs_15", "browser_jpeg_fps_vs_15"} <= set(report["ratios"])


def test_every_ratio_is_positive_and_finite(quick_report):
    report, _ = quick_report
    assert len(report["ratios"]) >= 10
    for name, value in report["ratios"].items():
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (name, value)


def test_targets_say_met_or_missed(quick_report):
    report, stdout = quick_report
    assert [t["ratio"] for t in report["targets"]] == [key for _name, key, _op, _limit in TARGETS]
    for t in report["targets"]:
        if t["measured"] is None:  # only the browser's, where this machine lacks its tools
            assert t["ratio"].startswith("browser_") and "skipped" in report["browser"], t
            assert t["met"] is None and t["note"].startswith("not measured")
            continue
        assert isinstance(t["met"], bool) and t["measured"] == report["ratios"][t["ratio"]]
    assert "| target | measured | met |" in stdout
    assert "FaceMesh graph alone, tracking" in stdout
    yuv = report["per_frame"]["yuv"]
    assert (f"The kit's own time per frame (the path minus FaceMesh alone, median over passes): YUV "
            f"{yuv['own_ms']:.2f} ms") in stdout


def test_extraction_alone():
    """The extraction section on its own (the README's command for re-measuring it)."""
    from facekit.bench import extraction_alone

    report = extraction_alone(quick=True, passes=1)
    assert report["photos"] == 8 and report["faces_found"]["kit"] >= 1
    assert set(report["ratios"]) == {"kit_vs_original", "kit_vs_facemesh_alone", "kit_vs_facemesh_alone_full_size",
                                     "ceiling_vs_facemesh_alone",
                                     "kit_vs_ceiling"}
    assert all(math.isfinite(v) and v > 0 for v in report["ratios"].values())
