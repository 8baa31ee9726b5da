"""``edgehdr bench --runtime``'s memory figures: the resident set split by kind adds up to what ``statm`` reports,
and the split follows an allocation into the anonymous part."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgehdr.bench.runtime import _rss_mb, _rss_split_mb

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc/self")


def test_rss_split_adds_up_to_the_resident_set():
    split = _rss_split_mb()
    total = _rss_mb()
    assert split["anonymous"] > 0 and split["file"] > 0
    assert abs(split["anonymous"] + split["file"] - total) < max(2.0, 0.02 * total)


def test_an_allocation_shows_in_the_anonymous_part():
    before = _rss_split_mb()["anonymous"]
    block = np.ones(64 << 20, np.uint8)  # 64 MB, touched
    after = _rss_split_mb()["anonymous"]
    assert 60 <= after - before <= 72
    assert block[-1] == 1


def test_the_peak_can_be_reset_to_the_current_resident_set():
    """``VmHWM`` after a 64 MB block was freed stays up; after the reset it is back near the current RSS."""
    from edgehdr.bench.runtime import _peak_rss_mb, _reset_peak_rss

    block = np.ones(64 << 20, np.uint8)
    del block  # above glibc's largest mmap threshold (32 MB): unmapped, the RSS falls back, the peak stays
    assert _peak_rss_mb() - _rss_mb() > 50
    if not _reset_peak_rss():
        pytest.skip("/proc/self/clear_refs cannot be written here")
    assert _peak_rss_mb() - _rss_mb() < 8
