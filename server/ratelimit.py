"""Failed logins per source address (interim: no limit; replaced by the hardening work)."""

from __future__ import annotations


class LoginLimiter:
    def retry_after(self, peer: str, now: float) -> float:
        return 0.0

    def failed(self, peer: str, now: float) -> bool:
        return True

    def succeeded(self, peer: str) -> None:
        return None
