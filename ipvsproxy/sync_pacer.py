"""When the reconciler may start its next sync: kube-proxy's bounded frequency, as a
token bucket.

kube-proxy's BoundedFrequencyRunner lets ``burst`` syncs start back to back, then one per
``--ipvs-min-sync-period``. The bucket does the same: it holds up to ``burst`` tokens, a
sync takes one, and one comes back every ``min_interval``. A change that finds the proxy
idle therefore always finds a token and is synced at once; only a run of changes faster
than the period waits, and what arrives meanwhile is coalesced into the next sync (the
dirty set). With ``min_interval`` 0 nothing waits: each sync then takes whatever queued
while the one before ran, which bounds the sync rate by the syncs' own cost.

A failed sync holds the bucket until its retry time (``hold``), whatever the tokens.
Pure: the caller passes the time.
"""

from __future__ import annotations


class SyncPacer:
    def __init__(self, min_interval: float, burst: int = 2) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.min_interval = max(0.0, min_interval)
        self.burst = burst
        self._tokens = float(burst)
        self._refilled_at: float | None = None
        self._not_before = -float("inf")

    def _refill(self, now: float) -> None:
        if self._refilled_at is not None and self.min_interval > 0:
            earned = (now - self._refilled_at) / self.min_interval
            self._tokens = min(float(self.burst), self._tokens + earned)
        self._refilled_at = now

    def delay(self, now: float) -> float:
        """Seconds until a sync may start (0: now)."""
        self._refill(now)
        wait = max(0.0, self._not_before - now)
        if self.min_interval > 0 and self._tokens < 1:
            wait = max(wait, (1 - self._tokens) * self.min_interval)
        return wait

    def started(self, now: float) -> None:
        """A sync starts now: it takes a token."""
        self._refill(now)
        if self.min_interval > 0:
            self._tokens = max(0.0, self._tokens - 1)

    def hold(self, until: float) -> None:
        """No sync before ``until`` (a failed sync's retry time)."""
        self._not_before = until
