"""`cad detect` end to end with the released locked model (SRS-OUT-*, SRS-MOD-*, SRS-DET-*)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pydicom
import pytest
from PIL import Image

import cad
from cad.detect.locked import DEFAULT_MODEL_DIR, sha256_file
from cad.result.findings_json import result_to_dict

CAD = [sys.executable, "-m", "cad.cli"]
SCHEMA = json.loads((Path(cad.__file__).parent / "schemas" / "findings.schema.json").read_text())


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAD, *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def detected(tmp_path_factory: pytest.TempPathFactory, mass_phantom_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("detect")
    result = run("detect", str(mass_phantom_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return out


def _findings(folder: Path) -> dict[str, Any]:
    (path,) = folder.rglob("findings.json")
    return json.loads(path.read_text())


@pytest.mark.req("SRS-OUT-001", "SRS-MOD-003")
def test_findings_json_is_valid_and_identifies_the_model(detected: Path, mass_truth: dict[str, Any]) -> None:
    data = _findings(detected)
    jsonschema.validate(data, SCHEMA)
    assert data["study_instance_uid"] == mass_truth["exams"][0]["study_instance_uid"]
    assert data["algorithm"]["version"] == cad.__version__
    assert data["algorithm"]["name"] == cad.ALGORITHM_NAME
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    assert data["algorithm"]["model_sha256"] == sha256_file(DEFAULT_MODEL_DIR / "weights.safetensors")
    assert data["algorithm"]["model_sha256"] == manifest["weights"]["sha256"]
    assert [i["status"] for i in data["images"]] == ["analyzed"] * 4
    for f in data["findings"]:
        assert f["linked"] == (len(f["views"]) == 2)
        assert 0.0 <= f["score"] <= 1.0 and all(0.0 <= v["score"] <= 1.0 for v in f["views"])
        if f["linked"]:  # the released model is one-stage (noisy-OR); two-stage: test_second_stage.py
            assert {v["view"] for v in f["views"]} == {"CC", "MLO"}
            assert f["score"] >= max(v["score"] for v in f["views"]) - 1e-6
    # the loop above must have had something to check: findings, some of them linked
    assert data["findings"] and any(f["linked"] for f in data["findings"])


@pytest.mark.req("SRS-DET-002", "SRS-LNK-003")
@pytest.mark.xfail(
    strict=True,
    reason="released phantom model misses the issue-14 targets (ANOM-001, ANOM-002; MODEL_CARD.md): it "
    "marks the fixture's 13 mm mass R1 on CC (0.25) but not on MLO, and links the CC mark to a false "
    "MLO mark between the two masses. "
    "Strict: this fails loudly once a better model finds and links it.",
)
def test_masses_are_found_and_linked(detected: Path, mass_truth: dict[str, Any]) -> None:
    data = _findings(detected)
    threshold = data["operating_point"]["threshold"]
    shown = [f for f in data["findings"] if f["score"] >= threshold]
    exam = mass_truth["exams"][0]
    masses = [l for l in exam["lesions"] if l["type"] == "mass" and len(l["views"]) == 2]
    assert masses, "fixture exam should have a two-view mass"
    for lesion in masses:
        def hits(view: dict[str, Any], box: list[int]) -> bool:
            cx, cy = (view["box"][0] + view["box"][2]) / 2, (view["box"][1] + view["box"][3]) / 2
            return box[0] <= cx < box[2] and box[1] <= cy < box[3]
        boxes = {v["sop_instance_uid"]: v["box"] for v in lesion["views"]}
        assert any(
            len(f["views"]) == 2 and all(hits(v, boxes[v["sop_instance_uid"]]) for v in f["views"]
                                         if v["sop_instance_uid"] in boxes)
            and all(v["sop_instance_uid"] in boxes for v in f["views"])
            for f in shown
        ), f"lesion {lesion['lesion_id']} is not one linked finding at the operating point"


@pytest.mark.req("SRS-DCM-001", "SRS-DCM-002", "SRS-DCM-004")
def test_detect_writes_sr_and_presentation_state_next_to_findings(detected: Path) -> None:
    from cad.report.sr.reader import carried, read_mammography_cad_sr

    (folder,) = [p.parent for p in detected.rglob("findings.json")]
    sr, pr = pydicom.dcmread(folder / "cad-sr.dcm"), pydicom.dcmread(folder / "cad-pr.dcm")
    assert sr.StudyInstanceUID == pr.StudyInstanceUID == folder.name
    assert carried(result_to_dict(read_mammography_cad_sr(folder / "cad-sr.dcm"))) == carried(_findings(detected))


@pytest.mark.req("SRS-DET-004")
def test_same_input_gives_byte_identical_findings(detected: Path, mass_phantom_dir: Path, tmp_path: Path) -> None:
    again = run("detect", str(mass_phantom_dir), "--out", str(tmp_path), "--no-overlays")
    assert again.returncode == 0, again.stderr
    (first,) = detected.rglob("findings.json")
    (second,) = tmp_path.rglob("findings.json")
    assert first.read_bytes() == second.read_bytes()


@pytest.fixture(scope="module")
def image_rows(mass_phantom_dir: Path) -> dict[str, int]:
    rows = {}
    for path in mass_phantom_dir.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rows[str(ds.SOPInstanceUID)] = int(ds.Rows)
    return rows


@pytest.mark.req("SRS-OUT-003")
def test_one_overlay_per_view_with_marks_at_the_boxes(detected: Path, image_rows: dict[str, int]) -> None:
    data = _findings(detected)
    pngs = sorted(detected.rglob("overlays/*.png"))
    assert len(pngs) == 4
    threshold = data["operating_point"]["threshold"]
    drawn = 0
    for f in data["findings"]:
        if f["score"] < threshold:
            continue
        for v in f["views"]:
            (png,) = [p for p in pngs if p.stem.endswith(v["sop_instance_uid"][-12:])]
            overlay = np.asarray(Image.open(png).convert("RGB")).astype(int)
            scale = overlay.shape[0] / image_rows[v["sop_instance_uid"]]
            x0, y0, x1, y1 = (int(round(c * scale)) for c in v["box"])
            colour = (0, 210, 255) if f["linked"] else (255, 150, 0)
            band = overlay[max(0, y1 - 3) : min(y1 + 2, overlay.shape[0]), x0 : x1 + 1]
            on_colour = (np.abs(band - colour).sum(axis=2) < 30).any(axis=0)
            assert on_colour.mean() > 0.5, f"{png.name}: no mark along the bottom of {v['box']}"
            drawn += 1
    assert drawn > 0


@pytest.mark.req("SRS-OUT-002")
def test_bad_view_is_reported_and_the_rest_analysed(mass_phantom_dir: Path, tmp_path: Path) -> None:
    exam = tmp_path / "exam"
    shutil.copytree(mass_phantom_dir / "exam00000", exam)
    ds = pydicom.dcmread(exam / "L_MLO.dcm")
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    ds.save_as(exam / "L_MLO.dcm", enforce_file_format=True)
    result = run("detect", str(exam), "--out", str(tmp_path / "out"), "--no-overlays")
    assert result.returncode == 5, result.stderr  # analysed, but not every image: incomplete
    assert "Traceback" not in result.stderr
    data = _findings(tmp_path / "out")
    jsonschema.validate(data, SCHEMA)
    status = {(i["laterality"], i["view"]): i for i in data["images"]}
    assert status[("L", "MLO")]["status"] == "not_analyzed"
    assert "truncated pixel data" in status[("L", "MLO")]["reason"]
    assert [status[k]["status"] for k in (("L", "CC"), ("R", "CC"), ("R", "MLO"))] == ["analyzed"] * 3
    assert not any(v["view"] == "MLO" and f["laterality"] == "L" for f in data["findings"] for v in f["views"])
    assert result.stderr.strip().splitlines() == [
        f"not analysed: {exam / 'L_MLO.dcm'}: " + status[("L", "MLO")]["reason"],  # the path as given
        "incomplete: 1 image of 1 study not analysed (listed above); the results of the rest are complete"]


@pytest.mark.req("SRS-OUT-002")
def test_nothing_analysable_exits_1_and_is_recorded(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "junk.dcm").write_bytes(b"junk")
    result = run("detect", str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    records = json.loads((tmp_path / "out" / "not_analysed.json").read_text())
    assert [r["file"] for r in records] == [str(tmp_path / "in" / "junk.dcm")]
    assert result.stderr.splitlines()[-1] == "error: nothing could be analysed"


@pytest.mark.req("SRS-MOD-001")
@pytest.mark.parametrize("damage", ["flip_byte", "no_manifest", "bad_manifest", "misspelt_setting"])
def test_model_that_is_not_the_locked_one_is_refused(
    damage: str, tmp_path: Path, mass_phantom_dir: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    if damage == "flip_byte":
        weights = model / "weights.safetensors"
        raw = bytearray(weights.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        weights.write_bytes(bytes(raw))
        expected = "weights do not match the manifest"
    elif damage == "no_manifest":
        (model / "manifest.json").unlink()
        expected = "no locked model here (manifest.json not found); name the locked model folder with --model DIR"
    elif damage == "bad_manifest":
        (model / "manifest.json").write_text("{\"weights\": {}}")
        expected = "malformed model manifest"
    else:  # a misspelt setting must not look recorded while its default runs
        manifest = json.loads((model / "manifest.json").read_text())
        manifest["linking"]["min_scroe"] = manifest["linking"].pop("min_score")
        (model / "manifest.json").write_text(json.dumps(manifest))
        expected = "unknown linking settings: min_scroe"
    result = run("detect", str(mass_phantom_dir), "--out", str(tmp_path / "out"), "--model", str(model))
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(model) in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.req("SRS-DET-005")
def test_processing_time_is_recorded(detected: Path) -> None:
    summary = json.loads((detected / "detect_run.json").read_text())
    assert summary["studies"] == 1 and summary["images_analysed"] == 4
    assert 0 < summary["mean_cpu_seconds_per_study"] < 600
    assert 0 < summary["mean_wall_seconds_per_study"] < 600
