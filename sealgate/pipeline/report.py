"""What a run shows: the JSON report, the human lines, the job summary, all redacted."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealgate.pipeline.config import RunConfig
from signer.redact import (
    MIN_SECRET,
    environment_secrets,
    pin_values,
    redact_text,
    url_secrets,
)
from signer.sign import SignedArtifact
from signer.verify import Verdict

STAGES = ("commits", "tree", "watch", "sign", "verify", "attest")
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass
class Stage:
    """One stage's outcome for the report and the summaries."""

    name: str
    status: str = SKIPPED
    summary: str = "not run"
    #: the stable reason code of the failure (docs/reason-codes.md); None unless failed
    code: str | None = None
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    #: (path or None, message): what CI plugins turn into file annotations
    annotations: list[tuple[str | None, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "code": self.code,
            "summary": self.summary,
            "reasons": self.reasons,
            "annotations": [{"file": path, "message": text} for path, text in self.annotations],
            **self.details,
        }


@dataclass
class RunResult:
    """Everything one run did: stages, signatures, verdicts and the exit code."""

    stages: dict[str, Stage]
    commit: str | None = None
    range: str | None = None
    key: str | None = None
    signed: list[SignedArtifact] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    attestation: Path | None = None
    exit_code: int = 0
    #: literal secrets of this run's settings, masked wherever the result is shown
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def as_json(self, root: Path) -> dict[str, Any]:
        return {
            "version": 1,
            "ok": self.exit_code == 0,
            "exit_code": self.exit_code,
            "code": next((s.code for s in self.stages.values() if s.code), None),
            "repository": str(root),
            "commit": self.commit,
            "range": self.range,
            "key": self.key,
            "stages": [stage.as_json() for stage in self.stages.values()],
            "signatures": [s.as_json() for s in self.signed],  # timestamps shown redacted
            "verify": [v.as_json() for v in self.verdicts],
            "attestation": str(self.attestation) if self.attestation else None,
        }


def config_secrets(config: RunConfig, env: Mapping[str, str]) -> tuple[str, ...]:
    """Every credential the run's settings or environment hold, longest first."""
    found: list[str] = list(environment_secrets(env))
    urls = [*(config.values.get("tsa_urls") or ()), config.values.get("key") or "",
            config.values.get("attest_key") or "", env.get("VAULT_ADDR", ""),
            env.get("BAO_ADDR", ""), env.get("AWS_ENDPOINT_URL", ""),
            env.get("AWS_ENDPOINT_URL_KMS", "")]  # fmt: skip
    for url in urls:
        found += url_secrets(str(url))
        found += pin_values(str(url))
    unique = {value for value in found if len(value) >= MIN_SECRET}
    return tuple(sorted(unique, key=len, reverse=True))


def _redact_document(value: Any, secrets: Sequence[str]) -> Any:
    """The report with `redact_text` applied to every string in it, keys included."""
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {
            redact_text(str(k), secrets): _redact_document(v, secrets) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_document(v, secrets) for v in value]
    return value


def human_lines(result: RunResult) -> list[str]:
    """One line per stage, then the verdict; URLs and secrets redacted."""
    lines = [
        f"{s.name:<8} {s.status:<8} {f'[{s.code}] ' if s.code else ''}{s.summary}"
        for s in result.stages.values()
    ]
    for stage in result.stages.values():
        lines += [f"  {stage.name}: {reason}" for reason in stage.reasons[:20]]
    lines.append("sealgate run: " + ("OK" if result.exit_code == 0 else "FAILED"))
    return [redact_text(line, result.secrets) for line in lines]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_summary(result: RunResult) -> str:
    """The job summary: a table of the stages, then a <details> block per artifact."""
    icon = {PASSED: "✅", FAILED: "❌", SKIPPED: "⏭️"}
    lines = [
        f"## Sealgate: {'passed' if result.exit_code == 0 else 'FAILED'}",
        "",
        "| stage | status | details |",
        "|---|---|---|",
    ]
    for stage in result.stages.values():
        detail = (f"`{stage.code}` " if stage.code else "") + stage.summary
        if stage.reasons:
            detail += "<br>" + "<br>".join(_cell(r) for r in stage.reasons[:10])
        lines.append(f"| {stage.name} | {icon[stage.status]} {stage.status} | {_cell(detail)} |")
    verdicts = {v.artifact: v for v in result.verdicts}
    for signed in result.signed:
        verdict = verdicts.get(signed.artifact)
        lines += ["", f"<details><summary><code>{signed.artifact.name}</code></summary>", ""]
        lines.append(f"- signature: `{signed.signature}`")
        lines.append(f"- {signed.hash_name}: `{signed.digest_hex}`")
        lines.append(f"- signer: {signed.certificate_subject} ({signed.scheme})")
        if signed.timestamp:
            lines.append(f"- timestamp: {signed.timestamp.gen_time.isoformat()}")
        if verdict is not None:
            lines.append(
                "- verify: " + ("verified" if verdict.verified else f"FAILED: {verdict.reason}")
            )
        lines += ["", "</details>"]
    return redact_text("\n".join(lines) + "\n", result.secrets)


def write_outputs(result: RunResult, config: RunConfig, env: Mapping[str, str]) -> None:
    """The JSON report, and the Markdown job summary when $GITHUB_STEP_SUMMARY is set."""
    report: Path = config["report"]
    report.parent.mkdir(exist_ok=True)  # the last level only; prepare() checked the rest
    temporary = report.with_name(report.name + ".tmp")
    document = _redact_document(result.as_json(config.repo), result.secrets)
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, report)
    summary = env.get("GITHUB_STEP_SUMMARY")
    if summary:
        # a file name that is not UTF-8 is shown escaped, not a UnicodeEncodeError after signing
        with open(summary, "a", encoding="utf-8", errors="backslashreplace") as stream:
            stream.write(markdown_summary(result))
