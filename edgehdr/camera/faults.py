"""Fault injection around any bracket source, for fault runs of the daemon (``edgehdr bench --faults``).

Wraps a real source and, on a schedule of read numbers, raises a device error,
stalls past the timeout, or hands out a corrupt bracket (frames of the wrong
size), so the pipeline's recovery paths run against the real stages.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from edgehdr.bracket import Bracket
from edgehdr.camera.base import BracketSource, ExposurePlan, SourceError, SourceTimeout

__all__ = ["FaultInjector"]


class FaultInjector(BracketSource):
    def __init__(self, source: BracketSource, *, raise_at: Iterable[int] = (), stall_at: Iterable[int] = (),
                 corrupt_at: Iterable[int] = ()) -> None:
        self.source = source
        self.raise_at, self.stall_at, self.corrupt_at = set(raise_at), set(stall_at), set(corrupt_at)
        self.reads = 0
        self.name = f"faulty:{source.name}"
        self.bits = source.bits
        self.injected = {"raise": 0, "stall": 0, "corrupt": 0}

    def __getattr__(self, item: str) -> Any:  # response, width, height, ... of the wrapped source
        return getattr(self.source, item)

    def open(self) -> None:
        self.source.open()

    def close(self) -> None:
        self.source.close()

    @property
    def plan(self) -> ExposurePlan | None:
        return self.source.plan

    def set_plan(self, plan: ExposurePlan) -> None:
        self.source.set_plan(plan)

    def describe(self) -> dict[str, Any]:
        return dict(self.source.describe(), faults=sorted(self.raise_at | self.stall_at | self.corrupt_at))

    def read_bracket(self, timeout_s: float = 1.0) -> Bracket:
        self.reads += 1
        if self.reads in self.raise_at:
            self.injected["raise"] += 1
            raise SourceError("injected fault: camera reset")
        if self.reads in self.stall_at:
            self.injected["stall"] += 1
            time.sleep(timeout_s)
            raise SourceTimeout("injected fault: no frame")
        bracket = self.source.read_bracket(timeout_s)
        if self.reads in self.corrupt_at:
            self.injected["corrupt"] += 1
            half = np.ascontiguousarray(bracket.frames[:, : bracket.frames.shape[1] // 2])
            return Bracket(frames=half, exposure_s=bracket.exposure_s, gain=bracket.gain, bits=bracket.bits,
                           timestamp_ns=bracket.timestamp_ns, sequence=bracket.sequence, source=self.name)
        return bracket
