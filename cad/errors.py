"""The device's errors: one hierarchy, each class carrying the exit code of the `cad` command and
a message that is the one line a person reads (naming the file, option or setting, never a
patient identifier).

The command line maps an error to its exit code by its class (:func:`cad.cli.main`), never by
catching a built-in exception: a ValueError from inside an analysis is a defect, not a usage
error. Classes that were ValueError or RuntimeError before this hierarchy keep that base too, so
code that catches them by it keeps working.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The exit codes of every `cad` verb (README, `cad --help`, SRS-PRD-001)."""

    OK = 0
    #: nothing could be analysed; a study failed (batch, serve --once); a check failed
    NOTHING_ANALYSED = 1
    #: an option, a missing or unusable input, an output location, a runtime that cannot run here
    USAGE = 2
    #: the locked model failed verification, or none was found
    MODEL = 3
    #: analysed, but a study's DICOM outputs could not be written (`cad detect`)
    OUTPUTS_INCOMPLETE = 4
    #: analysed, but some images were not (each listed with why): those results are incomplete
    INCOMPLETE = 5
    #: the machine could not do what was asked: no space for the outputs, a port that cannot be opened
    ENVIRONMENT = 6


class CadError(Exception):
    """An error the device reports to a person: ``str(error)`` is the one line, ``exit_code`` the
    command's exit code."""

    exit_code: ExitCode = ExitCode.USAGE


class UsageError(CadError, ValueError):
    """What the user asked for cannot be done as asked: an option, a setting, a file given."""

    exit_code = ExitCode.USAGE


class ModelError(CadError):
    """The locked model is missing, malformed, not the one verified, or not released."""

    exit_code = ExitCode.MODEL


class EnvironmentProblem(CadError):
    """The machine cannot do what was asked (no space left, a port in use): not a defect, and
    cured by changing the machine, not the request."""

    exit_code = ExitCode.ENVIRONMENT


class SourceUnreachable(CadError):
    """A PACS or another source could not be reached or answered with an error."""

    exit_code = ExitCode.NOTHING_ANALYSED
