"""The models this software release was verified with (RC-002).

A locked model folder proves only that its weights match its own manifest; anything else about
it (an older locked model, a manifest whose operating point or linking settings were edited, a
folder `--model` or CAD_MODEL_DIR points to) is not covered. The release therefore pins, in its
own code, the weights SHA-256 and settings SHA-256 of every model it was verified with: the
device commands (`cad detect`, `cad batch`, `cad serve`) refuse any other pair with exit 3.
Development and verification of new models run an unreleased model only in the documented
development mode (CAD_DEVELOPMENT_MODEL=1), which says so on every run and marks every result
``released: false`` (findings.json, the SR's algorithm parameters).

Releasing a model (docs/model-card.md) means adding its pair here in a reviewed change, after its
verification; `tests/unit/test_release_binding.py` fails if the shipped model is not pinned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cad.detect.locked import LockedModel, ModelIntegrityError

#: environment variable of the development mode that lets an unreleased model run
DEVELOPMENT_VARIABLE = "CAD_DEVELOPMENT_MODEL"


@dataclass(frozen=True)
class ReleasedModel:
    name: str
    weights_sha256: str
    settings_sha256: str


#: every model this release was verified with (weights and settings, as verified)
RELEASED: tuple[ReleasedModel, ...] = (
    ReleasedModel("phantom-retinanet-r18",
                  "3b9cc37e9ec2af15da67f5594e092b5fc0053008dd035eae346bf060dc719a70",
                  "65bf9b117b3599e36ab96ffb1c61622fe908dd5dccc23d0f8bc08a186f928b76"),
)


class UnreleasedModelError(ModelIntegrityError):
    """The model is intact but is not one this release was verified with."""


def is_released(weights_sha256: str, settings_sha256: str | None) -> bool:
    """Whether the (weights, settings) pair is one this release was verified with."""
    return any(r.weights_sha256 == weights_sha256 and r.settings_sha256 == settings_sha256 for r in RELEASED)


def development_mode() -> bool:
    """Whether the development mode (an unreleased model may run, its results marked) is on."""
    return os.environ.get(DEVELOPMENT_VARIABLE, "").strip() == "1"


def require_released(model: LockedModel) -> bool:
    """True for a released model; False for an unreleased one in development mode;
    UnreleasedModelError otherwise (naming what differs, never the folder's contents)."""
    if is_released(model.sha256, model.settings_sha256):
        return True
    if development_mode():
        return False
    same_weights = [r for r in RELEASED if r.weights_sha256 == model.sha256]
    what = ("its settings (operating point, detector limits or linking) differ from the verified ones: settings "
            f"SHA-256 {(model.settings_sha256 or '')[:16]}…, released {same_weights[0].settings_sha256[:16]}…"
            if same_weights else f"its weights (SHA-256 {model.sha256[:16]}…) are not those of a released model")
    raise UnreleasedModelError(
        f"{model.path}: model {model.name} is not a model this release was verified with: {what}; "
        f"refusing to analyse (for development only: {DEVELOPMENT_VARIABLE}=1, results marked unreleased)")
