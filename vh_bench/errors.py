"""Errors meant for people: one line naming what was wrong, the config key, and what to do."""

from __future__ import annotations

import math


class ConfigError(ValueError):
    """A config value is missing, malformed or out of range. The message names the key."""

    def __init__(self, key: str, problem: str, fix: str = "") -> None:
        self.key = key
        msg = f"config `{key}`: {problem}"
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)


def is_int(x: object) -> bool:
    """An int that is not a bool (YAML `true` must not pass as a layer index or a count)."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: object) -> bool:
    """A finite int or float that is not a bool (`abc`, `nan` and `inf` are not hyperparameters)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class SampleError(RuntimeError):
    """A single sample could not be processed (bad image, non-finite logits, ...).

    Recorded on the sample's output line; the run goes on."""


class ScoringError(RuntimeError):
    """Scoring failed (e.g. a malformed ground-truth file). The sample lines are kept: fix the input
    and re-run the same command, which only re-scores."""


class RunError(RuntimeError):
    """The run cannot go on for a reason outside the config (another process holds the run, the
    disk is full). One line; the sample lines written so far are kept and the same command resumes."""
