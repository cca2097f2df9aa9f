"""Torch-aware peak memory of a block of code, measured during the timed pass itself.

On CUDA (torch imported and its CUDA context initialised): ``torch.cuda.max_memory_allocated``
after ``reset_peak_memory_stats``, minus what was allocated at the start. On CPU: the growth of
the process's resident set size (RSS) over the block, sampled every ``interval`` seconds by a
daemon thread reading ``/proc/self/statm`` (plus a reading at each end). RSS sees torch's CPU
tensors, numpy and Python alike, which tracemalloc does not; a peak shorter than the interval
can be missed, and memory the allocator kept from an earlier task is not counted as growth.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from types import TracebackType

CPU_MEASURE = "cpu_rss_growth"
CUDA_MEASURE = "cuda_peak_allocated"
_STATM = "/proc/self/statm"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """The process's resident set size now (bytes); its lifetime peak where /proc is missing."""
    try:
        with open(_STATM, "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS) cannot be reset
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _cuda_in_use():
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch
    return None


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.mb`` (MiB) and ``peak.measure`` (its name)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.mb: float = 0.0
        self.measure = CPU_MEASURE
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0
        self._base = 0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, rss_bytes())

    def __enter__(self) -> PeakMemory:
        self._torch = _cuda_in_use()
        if self._torch is not None:
            self.measure = CUDA_MEASURE
            self._torch.cuda.reset_peak_memory_stats()
            self._base = self._torch.cuda.memory_allocated()
            return self
        self._base = self._peak = rss_bytes()
        self._thread = threading.Thread(target=self._sample, name="tcs-fewshot-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._torch is not None:
            peak = self._torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, rss_bytes())
        self.mb = max(peak - self._base, 0) / 2**20
