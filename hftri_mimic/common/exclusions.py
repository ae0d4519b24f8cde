"""The exception every record-level check raises: a named reason from a fixed list, never a crash."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class RecordExclusion(Exception):
    """A record to exclude. ``reason`` is a key of the subclass's ``reasons``; ``detail`` says what exactly,
    without patient data or paths (e.g. 'lead aVL absent', '12 of 40 frames encoded')."""

    reasons: ClassVar[Mapping[str, str]] = {}

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in self.reasons:
            raise ValueError(f"unknown exclusion reason {reason!r}")
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail
