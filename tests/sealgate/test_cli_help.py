"""Every option of every command explains itself, and shared options read alike everywhere."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from sealgate.cli import COMMANDS, build_parser
from sealgate.options import TSA_OPTIONS, VERIFY_OPTIONS
from tests.components.cli import sealgate
from tests.components.hsm import HsmFixture


def _parsers(
    parser: argparse.ArgumentParser, path: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def _options_without_help() -> list[str]:
    missing = []
    for path, parser in _parsers(build_parser(), "sealgate"):
        for action in parser._actions:
            if action.option_strings and not (action.help or "").strip():
                missing.append(f"{path} {'/'.join(action.option_strings)}")
    return missing


def test_every_option_of_every_command_has_help() -> None:
    assert _options_without_help() == []


def test_the_walk_sees_every_command_and_nested_command() -> None:
    """The check above cannot pass by walking nothing."""
    paths = {path for path, _ in _parsers(build_parser(), "sealgate")}
    assert {f"sealgate {name}" for name in COMMANDS} <= paths
    assert {"sealgate keys csr", "sealgate keys inspect"} <= paths


def test_the_walk_catches_an_option_without_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """A control: an option added without help is found."""
    original = build_parser

    def with_a_bare_option(only: str | None = None) -> argparse.ArgumentParser:
        parser = original(only)
        parser.add_argument("--bare", action="store_true")
        return parser

    monkeypatch.setattr(f"{__name__}.build_parser", with_a_bare_option)
    assert _options_without_help() == ["sealgate --bare"]


def _group(help_text: str, title: str) -> str:
    """The lines of one option group of a --help page, wrapped text joined."""
    block = help_text.split(f"\n{title}", 1)[1].split("\n\n", 1)[0]
    return re.sub(r"\s+", " ", block).strip()


def _help_of(command: str) -> str:
    parsers = dict(_parsers(build_parser(command), "sealgate"))
    return parsers[f"sealgate {command}"].format_help()


@pytest.mark.parametrize("command", ["sign", "timestamp"])
def test_the_timestamp_options_read_alike_in_sign_timestamp_and_run(command: str) -> None:
    shown = _group(_help_of(command), "RFC 3161 timestamps")
    assert shown.split(":", 1)[1] == _group(_help_of("run"), "RFC 3161 timestamps").split(":", 1)[1]
    for setting in TSA_OPTIONS.values():
        assert f"${setting.env}" in shown
    assert "(default: 10.0;" in shown and "(default: 2;" in shown and "(default: 8;" in shown


def test_the_verify_options_read_alike_in_verify_and_run() -> None:
    run_help, verify_help = _help_of("run"), _help_of("verify")
    for setting in VERIFY_OPTIONS.values():
        for flag in setting.flags:
            assert flag in run_help and flag in verify_help
        assert f"${setting.env}" in re.sub(r"\s+", " ", run_help)
        assert f"${setting.env}" in re.sub(r"\s+", " ", verify_help)


def test_keys_csr_refuses_an_email_that_is_not_an_address(hsm: HsmFixture) -> None:
    result = sealgate(
        "keys", "csr", hsm.uri("ec256"), "--subject", "CN=Release signing",
        "--email", "release at example.com", env=hsm.env,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sealgate: error: [bad-email] --email: ")
    assert "release at example.com" in lines[0]
    assert "BEGIN CERTIFICATE REQUEST" not in result.stdout
