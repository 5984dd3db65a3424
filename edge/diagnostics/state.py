"""The record of one diagnosis while it runs: the checks made, the failure modes found, the primary one."""

from __future__ import annotations

from dataclasses import dataclass, field

from .modes import PRIORITY

__all__ = ["State"]


@dataclass
class State:
    hostname: str
    port: int
    checks: list[dict] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str, **extra) -> None:
        d = {"name": name, "ok": bool(ok), "detail": detail}
        d.update(extra)
        self.checks.append(d)

    def fail(self, mode: str) -> None:
        if mode not in self.modes:
            self.modes.append(mode)

    def primary(self) -> str:
        if not self.modes:
            return "ok"
        return min(self.modes, key=lambda m: PRIORITY.index(m) if m in PRIORITY else len(PRIORITY))
