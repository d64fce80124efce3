"""What the doctor found: one result per step, printed as lines for people or JSON for machines."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STATUS_WIDTH = 8


@dataclass
class StepResult:
    """One step: ``ok`` with a short detail, ``failed`` with what Kimi said and a hint, or
    ``skipped`` because a step it needs failed."""

    name: str
    status: str
    detail: str = ""
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    hint: str | None = None
    seconds: float | None = None


@dataclass
class Report:
    """The walk's results and where it went."""

    protocol: str
    base_url: str
    auth_url: str
    account: str
    steps: list[StepResult]
    capture: str | None = None

    @property
    def ok(self) -> bool:
        return all(step.status == OK for step in self.steps)

    @property
    def exit_status(self) -> int:
        return EXIT_OK if self.ok else EXIT_FAILED

    def failed_step(self) -> StepResult | None:
        return next((step for step in self.steps if step.status == FAILED), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "protocol": self.protocol,
            "base_url": self.base_url,
            "auth_url": self.auth_url,
            "account": self.account,
            "capture": self.capture,
            "steps": [asdict(step) for step in self.steps],
        }


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), ensure_ascii=False, indent=2)


def render_text(report: Report) -> str:
    hosts = report.base_url
    if report.auth_url != report.base_url:
        hosts += f" (auth {report.auth_url})"
    lines = [f"kimi doctor: {report.protocol} protocol at {hosts}, account {report.account}"]
    width = max(len(step.name) for step in report.steps) if report.steps else 0
    for step in report.steps:
        lines.append(f"{step.status:<{STATUS_WIDTH}} {step.name:<{width}}  {_summary(step)}")
        if step.hint:
            lines.append(f"{'':<{STATUS_WIDTH}} {'':<{width}}  hint: {step.hint}")
    failed = report.failed_step()
    lines.append(f"failed at step {failed.name}" if failed else "all steps ok")
    if report.capture:
        lines.append(f"capture written to {report.capture} (tokens and ids masked)")
    return "\n".join(lines)


def _summary(step: StepResult) -> str:
    if step.status != FAILED:
        return step.detail
    said = []
    if step.http_status is not None:
        said.append(f"HTTP {step.http_status}")
    if step.error_code:
        said.append(f"code {step.error_code}")
    if step.error_message:
        said.append(f"message {step.error_message!r}")
    return step.detail + (f" [{', '.join(said)}]" if said else "")
