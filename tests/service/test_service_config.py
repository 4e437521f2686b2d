"""service.yml is read strictly: unknown fields at every level, wrong types, bad matchers and
secrets are refused with the file and the line (exit 2); the example file passes --check."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealgate.service.configfile import CONFIG_LIMIT, load_config
from sealgate.service.errors import ServiceConfigError
from sealgate.service.grants import check_config

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
issuers:
  - name: gh
    provider: github
    issuer: https://token.actions.githubusercontent.com
    audience: sealgate-test
keys:
  release:
    uri: pkcs11:token=T;object=K?pin-source=file:/run/pin
    certificate: certs/release.pem
    tsa:
      urls: [https://tsa.example.com/tsr]
      roots: [roots/tsa.pem]
    release: true
    grants:
      - name: main
        issuer: gh
        claims:
          repository_id: 123456789
          job_workflow_ref: o/r/.github/workflows/release.yml@refs/heads/main
          ref: {glob: "refs/tags/v*"}
audit:
  key: hashivault://audit
  tsa:
    urls: [https://tsa.example.com/tsr]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "service.yml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str, code: str = "bad-service-config") -> ServiceConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ServiceConfigError) as caught:
        load_config(path)
    error = caught.value
    assert error.code == code, error.message
    assert error.exit_code == 2
    assert error.message.startswith(str(path)), error.message
    return error


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def insert_after(text: str, anchor: str, line: str) -> str:
    """`line` inserted after the first line holding `anchor`, indented like that line."""
    lines = text.splitlines()
    n = next(i for i, item in enumerate(lines) if anchor in item)
    indent = len(lines[n]) - len(lines[n].lstrip(" -"))
    lines.insert(n + 1, " " * indent + line)
    return "\n".join(lines) + "\n"


def test_the_base_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    key = config.keys["release"]
    assert key.certificate == tmp_path / "certs" / "release.pem"
    assert key.tsa_roots == (tmp_path / "roots" / "tsa.pem",)
    assert key.release and key.source == f"{tmp_path / 'service.yml'} line 8"
    grant = key.grants[0]
    assert grant.source == f"{tmp_path / 'service.yml'} line 15"
    assert [(c.claim, c.kind, c.values) for c in grant.claims] == [
        ("repository_id", "exact", ("123456789",)),
        ("job_workflow_ref", "exact", ("o/r/.github/workflows/release.yml@refs/heads/main",)),
        ("ref", "glob", ("refs/tags/v*",)),
    ]
    assert config.database == f"sqlite:///{tmp_path / 'sealgate-service.db'}"
    assert config.audit.key_uri == "hashivault://audit"
    assert check_config(config) == []


def test_a_relative_path_to_the_file_still_resolves_absolutely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, BASE + "database: sqlite:///data/s.db\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("service.yml"))
    assert config.database == f"sqlite:///{tmp_path / 'data' / 's.db'}"
    assert config.keys["release"].certificate == tmp_path / "certs" / "release.pem"


def test_the_example_file_passes_check() -> None:
    config = load_config(ROOT / "examples" / "service.yml")
    assert check_config(config) == []
    assert {i.name for i in config.issuers} == {"github", "gitlab"}
    assert config.keys["release"].release and not config.keys["nightly"].release
    gitlab = config.keys["nightly"].grants[1]
    assert {c.claim: c.values for c in gitlab.claims}["ref_protected"] == ("true",)


@pytest.mark.parametrize(
    ("anchor", "where"),
    [
        ("keys:", "top"),  # a top-level field, inserted before keys: at column 0
        ("provider: github", "issuer"),
        ("uri: pkcs11", "key"),
        ("urls: [https://tsa.example.com/tsr]", "tsa"),
        ("- name: main", "grant"),
        ("repository_id: 123456789", "claims-is-open"),
        ("key: hashivault://audit", "audit"),
    ],
)
def test_an_unknown_field_is_named_with_its_line(tmp_path: Path, anchor: str, where: str) -> None:
    if where == "top":
        text = BASE.replace("keys:\n", "signing_keys: {}\nkeys:\n")
        needle = "signing_keys"
    else:
        needle = "allow_self_hostd" if where == "grant" else "bogus"
        text = insert_after(BASE, anchor, f"{needle}: true")
    if where == "claims-is-open":
        # claim names are open (the provider's list is checked by --check), so a typo there
        # loads but never matches and --check names it
        config = load_config(write(tmp_path, text))
        findings = check_config(config)
        assert findings and "'bogus' is not a github claim" in findings[0]
        return
    error = refused(tmp_path, text, "unknown-config-field")
    assert f"line {line_of(text, needle)}:" in error.message
    assert f"unknown field {needle!r}" in error.message and error.field == needle


def test_an_unknown_field_in_a_matcher_is_named(tmp_path: Path) -> None:
    text = BASE.replace('{glob: "refs/tags/v*"}', '{glob: "refs/tags/v*", anchored: true}')
    error = refused(tmp_path, text, "unknown-config-field")
    assert f"line {line_of(text, 'anchored')}:" in error.message and "'anchored'" in error.message


def test_an_unknown_field_in_the_audit_tsa_is_named(tmp_path: Path) -> None:
    text = BASE + "    timeout: 5\n"
    error = refused(tmp_path, text, "unknown-config-field")
    assert f"line {line_of(text, 'timeout')}:" in error.message


@pytest.mark.parametrize(
    ("old", "new", "code", "why"),
    [
        ('{glob: "refs/tags/v*"}', '{glob: "refs/**"}', "bad-matcher", "'**'"),
        ('{glob: "refs/tags/v*"}', '{regex: "refs/tags/v.*"}', "bad-matcher", "anchored"),
        ('{glob: "refs/tags/v*"}', '{regex: "^(?i)refs$"}', "bad-matcher", "inline flags"),
        ('{glob: "refs/tags/v*"}', '{regex: "^(a+)+$"}', "bad-matcher", "exponential"),
        ('{glob: "refs/tags/v*"}', '{glob: "a*", regex: "^a$"}', "bad-matcher", "exactly one"),
        ('{glob: "refs/tags/v*"}', "{}", "bad-matcher", "exactly one"),
        ('{glob: "refs/tags/v*"}', "[a, b]", "bad-matcher", "ambiguous"),
        ('{glob: "refs/tags/v*"}', "{one_of: []}", "bad-matcher", "matches nothing"),
        ('{glob: "refs/tags/v*"}', "1.5", "bad-service-config", "string, integer or boolean"),
        ('{glob: "refs/tags/v*"}', "null", "bad-service-config", "string, integer or boolean"),
        ('{glob: "refs/tags/v*"}', "{glob: [a]}", "bad-service-config", "must be a string"),
    ],
)
def test_bad_matchers_are_refused(tmp_path: Path, old: str, new: str, code: str, why: str) -> None:
    text = BASE.replace(old, new)
    error = refused(tmp_path, text, code)
    assert why in error.message
    assert f"line {line_of(text, '          ref: ')}:" in error.message


@pytest.mark.parametrize(
    ("old", "new", "code", "why"),
    [
        ("audience: sealgate-test", "audience: https://github.com/octo-org", "default-audience",
         "GitHub's default audience"),
        ("audience: sealgate-test",
         "audience: https://token.actions.githubusercontent.com", "default-audience", "issuer"),
        ("audience: sealgate-test", "audience: sealgate-test\n    leeway: 31",
         "bad-service-config", "outside 0..30"),
        ("audience: sealgate-test", "audience: sealgate-test\n    algorithms: [RS256, HS256]",
         "bad-algorithms", "HS256"),
        ("audience: sealgate-test", "audience: sealgate-test\n    algorithms: [none]",
         "bad-algorithms", "none"),
        ("audience: sealgate-test", "audience: sealgate-test\n    jwks_refresh_interval: 0",
         "bad-service-config", "outside 1..86400"),
        ("provider: github", "provider: bitbucket", "bad-service-config", "not a provider"),
        ("issuer: https://token.actions.githubusercontent.com",
         "issuer: http://token.actions.githubusercontent.com", "bad-service-config", "https"),
        ("audience: sealgate-test",
         "audience: sealgate-test\n    jwks_url: https://u:p@evil.example/jwks",
         "secret-in-config", "credentials"),
        ("uri: pkcs11:token=T;object=K?pin-source=file:/run/pin",
         "uri: pkcs11:token=T;object=K?PIN-VALUE=1234", "secret-in-config", "pin-value"),
        ("release: true", "release: yes please", "bad-service-config", "true or false"),
        ("release: true", "release: true\n    pool_size: 0", "bad-service-config", "outside"),
        ("release: true", "release: true\n    version: '2'", "bad-service-config", "an integer"),
        ("- name: main", "- name: main\n        max_artifacts: -1", "bad-service-config",
         "outside"),
        ("issuer: gh", "issuer: [gh]", "bad-service-config", "must be a string"),
        ("urls: [https://tsa.example.com/tsr]\n      roots", "urls: [ftp://tsa]\n      roots",
         "bad-service-config", "http(s) URL"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_with_their_line(
    tmp_path: Path, old: str, new: str, code: str, why: str
) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    error = refused(tmp_path, text, code)
    assert why in error.message, error.message
    assert " line " in error.message


def test_a_database_password_is_refused(tmp_path: Path) -> None:
    error = refused(
        tmp_path, BASE + "database: postgresql://sealgate:hunter2@db/sealgate\n", "secret-in-config"
    )
    assert "PGPASSWORD" in error.message and "hunter2" not in error.message
    config = load_config(write(tmp_path, BASE + "database: postgresql://sealgate@db/sealgate\n"))
    assert config.database == "postgresql://sealgate@db/sealgate"


def test_an_audit_key_with_a_pin_is_refused(tmp_path: Path) -> None:
    text = BASE.replace("key: hashivault://audit", "key: pkcs11:token=A?pin-value=1")
    assert refused(tmp_path, text, "secret-in-config").field == "key"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (BASE + "keys: {}\n", "given twice"),
        (
            BASE.replace("  - name: gh\n", "  - &i\n    name: gh\n").replace(
                "keys:\n", "  - *i\nkeys:\n"
            ),
            "aliases",
        ),
        (
            BASE.replace("        claims:\n", "        claims: &c\n", 1).replace(
                "audit:\n",
                "  other:\n    uri: x\n    grants:\n      - {name: a, issuer: gh, "
                "claims: *c}\naudit:\n",
            ),
            "aliases",
        ),
        (BASE.replace("issuers:", "issuers: !!python/object:os.system"), "must be a list"),
        ("", "empty"),
        ("- a\n- b\n", "must be a mapping"),
        ("issuers: [\n", "not YAML"),
        (BASE + "---\nkeys: {}\n", "not YAML"),
        (BASE.replace("keys:\n", "keys: {}\nx:\n", 1), "unknown field"),
        (BASE.replace("  - name: gh\n", "  - name: gh\n    name: gh2\n"), "given twice"),
    ],
)
def test_hostile_yaml_is_refused(tmp_path: Path, text: str, why: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ServiceConfigError) as caught:
        load_config(path)
    assert why in caught.value.message, caught.value.message
    assert caught.value.exit_code == 2


def test_a_deeply_nested_document_is_refused_not_a_crash(tmp_path: Path) -> None:
    text = "issuers: " + "[" * 1000 + "]" * 1000 + "\n"
    assert "nested too deeply" in refused(tmp_path, text).message


def test_required_fields_are_required(tmp_path: Path) -> None:
    error = refused(
        tmp_path, BASE.replace("    audience: sealgate-test\n", ""), "missing-config-field"
    )
    assert "'audience' is required" in error.message and "line 2" in error.message
    error = refused(
        tmp_path, BASE.replace("audit:", "x_audit:").split("keys:")[0], "missing-config-field"
    )
    assert "'keys' is required" in error.message


def test_duplicate_issuers_and_grants_are_refused(tmp_path: Path) -> None:
    twice = BASE.replace(
        "keys:\n",
        "  - name: gh2\n    provider: github\n    issuer: https://token.actions.githubusercontent.com\n"
        "    audience: other\nkeys:\n",
    )
    assert "same issuer URL as issuer 'gh'" in refused(tmp_path, twice, "duplicate-issuer").message
    grants = BASE.replace(
        "audit:\n", "      - name: main\n        issuer: gh\n        claims: {ref: x}\naudit:\n"
    )
    assert "'main' is used twice" in refused(tmp_path, grants, "duplicate-grant").message


def test_a_claim_value_is_normalised_like_a_token_claim(tmp_path: Path) -> None:
    text = BASE.replace(
        "ref: {glob",
        "ref_protected: yes\n          environment: {one_of: [1, true]}\n          ref: {glob",
    )
    grant = load_config(write(tmp_path, text)).keys["release"].grants[0]
    values = {c.claim: c.values for c in grant.claims}
    assert values["ref_protected"] == ("true",) and values["environment"] == ("1", "true")


def test_file_problems_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ServiceConfigError) as caught:
        load_config(tmp_path / "missing.yml")
    assert caught.value.code == "file-missing" and caught.value.exit_code == 2
    with pytest.raises(ServiceConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.code == "not-a-file"
    big = tmp_path / "big.yml"
    big.write_text(BASE + "#" * CONFIG_LIMIT)
    with pytest.raises(ServiceConfigError) as caught:
        load_config(big)
    assert caught.value.code == "file-too-large"
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    with pytest.raises(ServiceConfigError) as caught:
        load_config(fifo)  # opened non-blocking: a FIFO never hangs the loader
    assert caught.value.code == "not-a-file"
    binary = write(
        tmp_path, "issuers: \udcff\n".encode("utf-8", "surrogateescape").decode("latin-1")
    )
    binary.write_bytes(b"issuers: \xff\n")
    with pytest.raises(ServiceConfigError) as caught:
        load_config(binary)
    assert "not UTF-8" in caught.value.message


def test_check_findings_name_the_file_and_line(tmp_path: Path) -> None:
    text = BASE.replace(
        "          repository_id: 123456789\n", "          sub: repo:o/r:ref:refs/heads/main\n"
    )
    path = write(tmp_path, text)
    findings = check_config(load_config(path))
    assert findings[0].startswith(f"{path} line 15: key 'release' grant 'main': matches sub")
    assert any("no immutable id" in finding for finding in findings)


def test_a_grant_for_an_unknown_issuer_loads_and_check_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("issuer: gh", "issuer: github"))
    findings = check_config(load_config(path))
    assert findings == [
        f"{path} line 15: key 'release' grant 'main': issuer 'github' is not configured "
        "(issuers: 'gh')"
    ]


# --- hypothesis: any document is a config or a ServiceConfigError, never another exception -------
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for name, value in node.items():
            found += _paths(value, (*prefix, name))
    elif isinstance(node, list):
        for n, value in enumerate(node):
            found += _paths(value, (*prefix, n))
    return found


FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_any_changed_value_loads_or_is_a_typed_refusal(tmp_path: Path, data: st.DataObject) -> None:
    document = yaml.safe_load(BASE)
    path = data.draw(st.sampled_from(_paths(document)[1:]))
    value = data.draw(VALUES)
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    try:
        text = yaml.safe_dump(document)
    except (yaml.YAMLError, ValueError):
        return
    try:
        load_config(write(tmp_path, text))
    except ServiceConfigError as exc:
        assert exc.exit_code == 2 and exc.message.startswith(str(tmp_path))


@pytest.mark.slow
@FUZZ
@given(st.text(max_size=400))
def test_any_text_loads_or_is_a_typed_refusal(tmp_path: Path, text: str) -> None:
    try:
        load_config(write(tmp_path, text))
    except ServiceConfigError as exc:
        assert exc.exit_code == 2 and exc.message.startswith(str(tmp_path))
