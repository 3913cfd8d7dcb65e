"""Peak resident memory of a block of code, sampled from /proc (ru_maxrss would include the model
load's own peak, which is larger than anything measured after it)."""

import resource
import threading
import time


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class PeakRSS:
    """`with PeakRSS() as p: ...` then p.extra_mb = peak RSS during the block minus RSS at its start."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval

    def __enter__(self):
        self.base = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())
        self.extra_mb = self.peak - self.base
        return False
