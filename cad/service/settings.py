"""Thresholds of the service's monitoring and alerts, from one TOML file (`cad serve --monitoring`).

A site's QA sets how late is late, how sensitive the drift charts and tests are, and the
sensitivity floor, in a reviewed file rather than in code; the service states the values in
effect on /about and the dashboard. Every key is optional (absent: the default below, which is
what the verification ran with); an unknown section or key, a wrong type or a value out of its
range is refused with one line naming the file, the key and the problem, so a typo can never
silently leave a default in place. docs/examples/monitoring.toml lists every key with its default.

Each drift check has a ``reference``: ``"model"``, the reference computed on the released
model's validation set and shipped beside it (manifest-verified, :mod:`cad.service.reference`),
or ``"site"``, the site's own first studies or images. Input drift defaults to the model (its KS
test has a minimum effect size, and a new detector should be caught from day one); output drift
defaults to the site, because an EWMA chart with fixed limits from 200 validation studies alarms
on any population difference however clinically small (docs/service.md, Output drift, measured).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cad.errors import UsageError

REFERENCES = ("model", "site")


@dataclass(frozen=True)
class AlertSettings:
    #: a study pending or running longer than this is late (RC-029)
    late_after_seconds: float = 900.0
    #: how often the audit chain is verified
    audit_every_seconds: float = 300.0
    #: the drift and performance checks run after a new study, or at least this often
    monitor_every_seconds: float = 60.0


@dataclass(frozen=True)
class OutputDriftSettings:
    #: what the charts' centre and spread come from: "site" (its first baseline_studies) or "model"
    reference: str = "site"
    #: EWMA weight of the newest point, and the control limits' width in standard deviations
    #: (chosen with `python -m cad_tools.drift_demo`: docs/service.md, Output drift)
    ewma_lambda: float = 0.1
    width_sd: float = 4.0
    #: studies forming the site baseline (reference "site", and the processing time always)
    baseline_studies: int = 500
    #: consecutive studies averaged into one chart point
    batch_studies: int = 20


@dataclass(frozen=True)
class InputDriftSettings:
    #: what a device's window is compared with: "model" (the validation images, where they hold
    #: the fact) or "site" (the device's first baseline_images)
    reference: str = "model"
    #: a device's first images forming its site baseline (reference "site")
    baseline_images: int = 200
    #: a device's latest images compared with the reference
    window_images: int = 200
    #: a fact drifts when the KS test rejects at this level and the distance is at least this
    p_value: float = 1e-3
    min_ks_distance: float = 0.2


@dataclass(frozen=True)
class PerformanceSettings:
    #: alert when exam-level sensitivity against outcomes falls below this (None: not checked)
    sensitivity_floor: float | None = None
    #: cancers needed in the window before the floor is judged
    min_cancers: int = 20
    window_days: float = 365.0


@dataclass(frozen=True)
class MonitoringSettings:
    alerts: AlertSettings = field(default_factory=AlertSettings)
    output_drift: OutputDriftSettings = field(default_factory=OutputDriftSettings)
    input_drift: InputDriftSettings = field(default_factory=InputDriftSettings)
    performance: PerformanceSettings = field(default_factory=PerformanceSettings)
    #: the file the settings came from (None: the defaults)
    source: str | None = None

    def public(self) -> dict[str, Any]:
        """The settings in effect, as /about and the dashboard state them."""
        return asdict(self)

    def with_overrides(self, late_after_seconds: float | None = None,
                       sensitivity_floor: float | None = None) -> MonitoringSettings:
        """These settings with `cad serve`'s command-line options applied (they win over the file)."""
        settings = self
        if late_after_seconds is not None:
            settings = replace(settings, alerts=replace(settings.alerts, late_after_seconds=late_after_seconds))
        if sensitivity_floor is not None:
            settings = replace(settings, performance=replace(settings.performance, sensitivity_floor=sensitivity_floor))
        settings.validate("command line")
        return settings

    def validate(self, where: str) -> None:
        """ValueError naming ``where`` and the key for any value out of its range."""
        def check(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise UsageError(f"{where}: {key}: {what}")

        a, o, i, p = self.alerts, self.output_drift, self.input_drift, self.performance
        check(o.reference in REFERENCES, "output_drift.reference", f"use one of {', '.join(REFERENCES)}")
        check(i.reference in REFERENCES, "input_drift.reference", f"use one of {', '.join(REFERENCES)}")
        check(a.late_after_seconds >= 1, "alerts.late_after_seconds", "at least 1")
        check(a.audit_every_seconds >= 0, "alerts.audit_every_seconds", "0 (every round) or more")
        check(a.monitor_every_seconds >= 0, "alerts.monitor_every_seconds", "0 (every round) or more")
        check(0 < o.ewma_lambda <= 1, "output_drift.ewma_lambda", "a weight in (0, 1]")
        check(o.width_sd > 0, "output_drift.width_sd", "must be positive")
        check(o.batch_studies >= 1, "output_drift.batch_studies", "at least 1")
        check(o.baseline_studies >= 2 * o.batch_studies, "output_drift.baseline_studies",
              "at least two batches of studies")
        check(i.baseline_images >= 20, "input_drift.baseline_images", "at least 20")
        check(i.window_images >= 20, "input_drift.window_images", "at least 20")
        check(0 < i.p_value < 1, "input_drift.p_value", "a probability in (0, 1)")
        check(0 < i.min_ks_distance <= 1, "input_drift.min_ks_distance", "a distance in (0, 1]")
        check(p.sensitivity_floor is None or 0 < p.sensitivity_floor < 1, "performance.sensitivity_floor",
              "a fraction between 0 and 1")
        check(p.min_cancers >= 1, "performance.min_cancers", "at least 1")
        check(p.window_days > 0, "performance.window_days", "must be positive")


_SECTIONS: dict[str, type] = {"alerts": AlertSettings, "output_drift": OutputDriftSettings,
                              "input_drift": InputDriftSettings, "performance": PerformanceSettings}


def _section(path: Path, name: str, cls: type, given: Any) -> Any:
    if not isinstance(given, dict):
        raise UsageError(f"{path}: [{name}] must be a table")
    known = [f.name for f in fields(cls)]
    values: dict[str, Any] = {}
    for key, value in given.items():
        if key not in known:
            raise UsageError(f"{path}: [{name}] {key}: unknown setting (known: {', '.join(known)})")
        default = getattr(cls(), key)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise UsageError(f"{path}: [{name}] {key}: expected a string, got {value!r}")
            values[key] = value
            continue
        integer = isinstance(default, int) and not isinstance(default, bool)
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
            raise UsageError(f"{path}: [{name}] {key}: expected {'an integer' if integer else 'a number'}, "
                             f"got {value!r}")
        if not math.isfinite(value):
            raise UsageError(f"{path}: [{name}] {key}: must be finite")
        values[key] = value if integer else float(value)
    return cls(**values)


def load_settings(path: Path | None) -> MonitoringSettings:
    """The settings of ``path`` (None: the defaults); ValueError with one line otherwise."""
    if path is None:
        return MonitoringSettings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML ({str(exc).splitlines()[0]})") from None
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        raise UsageError(f"{path}: unknown setting {sorted(unknown)[0]!r} (known: {', '.join(_SECTIONS)})")
    sections = {name: _section(path, name, cls, data.get(name, {})) for name, cls in _SECTIONS.items()}
    settings = MonitoringSettings(source=str(path), **sections)
    settings.validate(str(path))
    return settings
