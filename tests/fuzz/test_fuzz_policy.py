"""Fuzz the policy loader, sealgate.yml's parser and the policy importers from real inputs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integrity.errors import IntegrityError
from integrity.policy import load_policy, load_yaml
from integrity.policy_import import from_allowed_signers, from_sequoia_policy
from tests.components.gitrepo import gpg_user, make_repo, ssh_user
from tests.fuzz.common import FUZZ, TEXT_TOKENS, hostile, only_typed


@dataclass(frozen=True)
class Seeds:
    policy: bytes
    key_file: bytes
    allowed_signers: bytes
    sequoia: bytes
    settings: bytes


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeds]:
    home = tmp_path_factory.mktemp("fuzz-policy")
    alice = ssh_user(home, "alice")
    carol = gpg_user(make_repo(home), "Carol")
    policy = (
        "version: 1\nsigners:\n  - name: alice\n    roles: [developer, policy-admin]\n"
        f'    ssh: ["{alice.public_line}"]\n  - name: carol\n    openpgp: ["keys/carol.asc"]\n'
        'rules:\n  - paths: [".sealgate/**", "deploy/*.yml"]\n    require: policy-admin\n'
    )
    sequoia = (
        "version = 0\ncommit_goodlist = []\n[authorization.carol]\nsign_commit = true\n"
        f'add_user = true\nkeyring = """\n{carol.armored}"""\n'
    )
    settings = (
        'build-command: "make dist"\nartifacts: [dist/*.whl, dist/*.tar.gz]\nchain: [chain.pem]\n'
        "tsa_urls: [https://tsa.example/]\nno-attest: true\ntsa_timeout: 5\n"
    )
    yield Seeds(
        policy.encode(),
        carol.armored.encode(),
        f'alice@example.com namespaces="git" {alice.public_line}\n'.encode(),
        sequoia.encode(),
        settings.encode(),
    )


def _read_key(seeds: Seeds, relative: str) -> bytes:
    if relative != "keys/carol.asc":
        raise KeyError(relative)
    return seeds.key_file


def test_the_seeds_are_valid(seeds: Seeds) -> None:
    policy = load_policy(seeds.policy, source="seed", read_file=lambda r: _read_key(seeds, r))
    assert [s.name for s in policy.signers] == ["alice", "carol"]
    assert from_allowed_signers(seeds.allowed_signers.decode(), source="seed").document["signers"]
    assert from_sequoia_policy(seeds.sequoia.decode(), source="seed").document["signers"]
    assert load_yaml(seeds.settings, source="seed")["tsa_timeout"] == 5


def test_the_settings_seed_is_valid(seeds: Seeds, tmp_path: Path) -> None:
    from sealgate.pipeline import _read_config_file

    (tmp_path / "sealgate.yml").write_bytes(seeds.settings)
    values = _read_config_file(tmp_path / "sealgate.yml")
    assert values["attest"] is False and values["tsa_timeout"] == 5.0


@FUZZ
@given(data=st.data())
def test_policy_loader_raises_only_input_errors(seeds: Seeds, data: st.DataObject) -> None:
    text = data.draw(hostile(seeds.policy, tokens=TEXT_TOKENS, others=[seeds.settings]))
    only_typed(
        lambda: load_policy(text, source="fuzz.yml", read_file=lambda r: _read_key(seeds, r)),
        (IntegrityError,),
    )


@FUZZ
@given(data=st.data())
def test_policy_key_files_raise_only_input_errors(seeds: Seeds, data: st.DataObject) -> None:
    key = data.draw(hostile(seeds.key_file, tokens=TEXT_TOKENS))
    only_typed(
        lambda: load_policy(seeds.policy, source="fuzz.yml", read_file=lambda _: key),
        (IntegrityError,),
    )


@FUZZ
@given(data=st.data())
def test_yaml_loader_raises_only_input_errors(seeds: Seeds, data: st.DataObject) -> None:
    text = data.draw(hostile(seeds.settings, tokens=TEXT_TOKENS, others=[seeds.policy]))
    only_typed(lambda: load_yaml(text, source="sealgate.yml"), (IntegrityError,))


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")  # as the CLI: strict UTF-8 or exit 2


@FUZZ
@given(data=st.data())
def test_allowed_signers_import_raises_only_input_errors(seeds: Seeds, data: st.DataObject) -> None:
    text = _text(data.draw(hostile(seeds.allowed_signers, tokens=TEXT_TOKENS)))
    only_typed(lambda: from_allowed_signers(text, source="allowed_signers"), (IntegrityError,))


@FUZZ
@given(data=st.data())
def test_sequoia_import_raises_only_input_errors(seeds: Seeds, data: st.DataObject) -> None:
    text = _text(data.draw(hostile(seeds.sequoia, tokens=[*TEXT_TOKENS, b"[[", b"= {"])))
    only_typed(lambda: from_sequoia_policy(text, source="openpgp-policy.toml"), (IntegrityError,))


def test_a_fuzzed_file_on_disk_goes_through_the_same_loader(tmp_path: Path, seeds: Seeds) -> None:
    """Control for the file path: the capped reader hands the loader the same bytes."""
    from integrity.policy import load_policy_file

    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "carol.asc").write_bytes(seeds.key_file)
    (tmp_path / "policy.yml").write_bytes(seeds.policy)
    assert len(load_policy_file(tmp_path / "policy.yml").signers) == 2


@FUZZ
@given(data=st.data())
def test_sealgate_yml_reader_raises_only_usage_errors(
    seeds: Seeds, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The whole settings path: capped read, strict YAML, then each setting's type."""
    from sealgate.errors import SealgateError
    from sealgate.pipeline import _read_config_file

    path = tmp_path_factory.mktemp("fuzz-settings") / "sealgate.yml"
    path.write_bytes(data.draw(hostile(seeds.settings, tokens=TEXT_TOKENS)))
    only_typed(lambda: _read_config_file(path), (SealgateError,))
