"""Input drift end to end through a real `cad serve` (SRS-SVC-016, SRS-SVC-018, SRS-SVC-019):
phantom studies like the validation set raise no drift alert; studies from a detector with
another pixel spacing raise an input-drift alert on that fact within the window. Small windows
from a monitoring settings file keep it short; `python -m cad_tools.serve_drift_demo` runs the
same with the shipped thresholds (docs/service.md, Drift demonstration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cad_tools.phantom.generate import PhantomConfig, generate
from cad_tools.serve_drift_demo import run_demo


@pytest.mark.slow
@pytest.mark.req("SRS-SVC-016", "SRS-SVC-018", "SRS-SVC-019")
def test_a_detector_change_raises_input_drift_and_like_studies_do_not(tmp_path: Path) -> None:
    unshifted, shifted = tmp_path / "unshifted", tmp_path / "shifted"
    generate(unshifted, exams=8, seed=4040)
    generate(shifted, exams=5, seed=4041, config=PhantomConfig(spacing_mm=0.3))  # another detector: coarser pixels
    settings = tmp_path / "monitoring.toml"
    settings.write_text("[input_drift]\nbaseline_images = 20\nwindow_images = 20\n")
    report = run_demo(unshifted, shifted, tmp_path / "out", monitoring=settings, screenshots=False)
    assert report["monitoring"]["input_drift"]["window_images"] == 20
    assert report["input_checks_on_unshifted"] >= 3
    assert report["false_alarms"] == [], "studies like the validation set raise no drift alert"
    input_alerts = [d for d in report["detections"] if d["kind"] == "input-drift"]
    assert input_alerts and {d["key"].rsplit(":", 1)[1] for d in input_alerts} >= {"pixel_spacing_mm"}
    spacing = next(d for d in input_alerts if d["key"].endswith(":pixel_spacing_mm"))
    # KS distance >= 0.2 of a 20-image window: at least 4 shifted images, at most the whole window
    assert 4 <= spacing["delay_images"] <= 20 and "the model's validation images" in spacing["message"]
