"""Labelling: the instructions for use say what ISO 14971 information for safety needs (SRS-PRD-006)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IFU = ROOT / "docs" / "instructions-for-use.md"


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("*", "")).lower()


@pytest.mark.req("SRS-PRD-006")
@pytest.mark.parametrize("statement", [
    "not for clinical use",
    "adjunct",
    "reads every image of the examination unaided",
    "the absence of a mark does not mean the breast is normal",
    "for processing",
    "breast implants",
    "not analysed",
    "read it as an examination without cad",
    "use the most recent cad sr of the study",
    "installation verification",
    "watch the service for failed studies",
    "train readers",
])
def test_instructions_for_use_state_it(statement: str) -> None:
    assert statement in flat(IFU.read_text())


@pytest.mark.req("SRS-PRD-006")
def test_not_for_clinical_use_in_readme_model_card_and_help() -> None:
    assert "not for clinical use" in flat((ROOT / "README.md").read_text())
    assert "not for clinical use" in flat((ROOT / "models" / "phantom-retinanet-r18" / "MODEL_CARD.md").read_text())
    result = subprocess.run([sys.executable, "-m", "cad.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "not for clinical use" in flat(result.stdout)
