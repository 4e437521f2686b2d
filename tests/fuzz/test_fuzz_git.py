"""Fuzz git object splitting and the SSHSIG and OpenPGP checks from real signed commits."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integrity.artifacts import match_artifacts
from integrity.errors import InputError, IntegrityError
from integrity.gitobjects import parse_commit, parse_tag, parse_tree, split_commit, split_tag
from integrity.openpgp import OpenPgpKeyring, load_openpgp_key, load_openpgp_keys
from integrity.repository import parse_range
from integrity.sshsig import parse_public_key, verify_sshsig
from tests.components.gitrepo import Repo, gpg_user, make_repo, ssh_user
from tests.fuzz.common import FUZZ, TEXT_TOKENS, hostile, only_typed


@dataclass(frozen=True)
class Seeds:
    ssh_commit: bytes
    gpg_commit: bytes
    tag: bytes
    tree: bytes
    ssh_line: str
    ssh_payload: bytes
    ssh_signature: bytes
    gpg_armored: bytes
    gpg_payload: bytes
    gpg_signature: bytes
    keyring: OpenPgpKeyring


def _raw(repo: Repo, kind: str, rev: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(repo.path), "cat-file", kind, rev], capture_output=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeds]:
    home = tmp_path_factory.mktemp("fuzz-git")
    repo = make_repo(home)
    alice = ssh_user(home, "alice")
    carol = gpg_user(repo, "Carol")
    repo.write("src/a.txt", "one\n")
    repo.write("docs/b.md", "two\n")
    repo.commit_ssh(alice, "signed with ssh\n\nwith a body")
    ssh_commit = _raw(repo, "commit", "HEAD")
    repo.git("-c", "gpg.format=ssh", "-c", f"user.signingkey={alice.key}",
             "tag", "-s", "-m", "release", "v1")  # fmt: skip
    tag = _raw(repo, "tag", "v1")
    repo.write("src/a.txt", "three\n")
    repo.commit_gpg(carol, "signed with gpg")
    gpg_commit = _raw(repo, "commit", "HEAD")
    tree = _raw(repo, "tree", "HEAD^{tree}")
    ssh_split, gpg_split = split_commit(ssh_commit), split_commit(gpg_commit)
    assert ssh_split.signature is not None and gpg_split.signature is not None
    key = load_openpgp_key(carol.armored, where="seed")
    yield Seeds(
        ssh_commit, gpg_commit, tag, tree, alice.public_line, ssh_split.payload,
        ssh_split.signature, carol.armored.encode(), gpg_split.payload, gpg_split.signature,
        OpenPgpKeyring([key]),
    )  # fmt: skip


def test_the_seeds_are_valid(seeds: Seeds) -> None:
    """Control: the real objects split, parse and verify."""
    assert parse_commit("0" * 40, seeds.ssh_commit).tree
    assert parse_tag("0" * 40, seeds.tag).name == "v1"
    assert split_tag(seeds.tag).signature is not None
    assert set(parse_tree("0" * 40, seeds.tree)) == {b"src", b"docs"}
    key = verify_sshsig(seeds.ssh_signature, seeds.ssh_payload)
    assert key.blob == parse_public_key(seeds.ssh_line, where="seed").blob
    assert seeds.keyring.verify(seeds.gpg_signature, seeds.gpg_payload)


@FUZZ
@given(data=st.data())
def test_commit_splitting_and_parsing_raise_only_typed_errors(
    seeds: Seeds, data: st.DataObject
) -> None:
    raw = data.draw(hostile(seeds.ssh_commit, tokens=TEXT_TOKENS, others=[seeds.gpg_commit]))
    only_typed(lambda: split_commit(raw), (IntegrityError,))
    only_typed(lambda: split_commit(raw, "sha256"), (IntegrityError,))
    only_typed(lambda: parse_commit("1" * 40, raw), (IntegrityError,))


@FUZZ
@given(data=st.data())
def test_tag_splitting_and_parsing_raise_only_typed_errors(
    seeds: Seeds, data: st.DataObject
) -> None:
    raw = data.draw(hostile(seeds.tag, tokens=TEXT_TOKENS, others=[seeds.ssh_commit]))
    only_typed(lambda: split_tag(raw), (IntegrityError,))
    only_typed(lambda: parse_tag("1" * 40, raw), (IntegrityError,))


@FUZZ
@given(data=st.data())
def test_tree_parsing_raises_only_typed_errors(seeds: Seeds, data: st.DataObject) -> None:
    raw = data.draw(hostile(seeds.tree, tokens=[b"\0", b" ", b"100644 ", b"40000 ", b"..", b"/"]))
    only_typed(lambda: parse_tree("1" * 40, raw), (IntegrityError,))


@FUZZ
@given(data=st.data())
def test_sshsig_raises_only_typed_errors(seeds: Seeds, data: st.DataObject) -> None:
    signature = data.draw(hostile(seeds.ssh_signature, tokens=TEXT_TOKENS))
    payload = data.draw(st.one_of(st.just(seeds.ssh_payload), hostile(seeds.ssh_payload)))
    namespace = data.draw(st.sampled_from(["git", "file", ""]))
    only_typed(lambda: verify_sshsig(signature, payload, namespace=namespace), (IntegrityError,))


@FUZZ
@given(data=st.data())
def test_ssh_public_key_lines_raise_only_typed_errors(seeds: Seeds, data: st.DataObject) -> None:
    line = data.draw(hostile(seeds.ssh_line.encode(), tokens=TEXT_TOKENS))
    text = line.decode("utf-8", "replace")
    only_typed(lambda: parse_public_key(text, where="fuzz key"), (IntegrityError,))


@FUZZ
@given(data=st.data())
def test_openpgp_verify_raises_only_typed_errors(seeds: Seeds, data: st.DataObject) -> None:
    signature = data.draw(hostile(seeds.gpg_signature, tokens=TEXT_TOKENS))
    only_typed(lambda: seeds.keyring.verify(signature, seeds.gpg_payload), (IntegrityError,))


@FUZZ
@given(data=st.data())
def test_openpgp_key_loading_raises_only_typed_errors(seeds: Seeds, data: st.DataObject) -> None:
    armored = data.draw(hostile(seeds.gpg_armored, tokens=TEXT_TOKENS))
    only_typed(lambda: load_openpgp_keys(armored, where="fuzz keyring"), (IntegrityError,))


#: Pieces that matter to a range and a glob: separators, option dashes, escapes, wildcards.
_RANGE_PIECES = ["..", "...", ".", "-", "--", "^", "~", "@", "{", "}", ":", "/", " ", "\t",
                 "\n", "\x00", "\x7f", "\u200b", "HEAD", "main", "v1.0", "a" * 40, "refs/heads/"]  # fmt: skip
_GLOB_PIECES = ["*", "**", "?", "[", "]", "!", "#", "\\", "/", "..", ".", ".git", "dist", "a.whl",
                " ", "\n", "\x00", "é", "~"]  # fmt: skip


@FUZZ
@given(pieces=st.lists(st.sampled_from(_RANGE_PIECES) | st.text(max_size=4), max_size=8))
def test_a_range_is_two_revisions_or_bad_range(pieces: list[str]) -> None:
    """Whatever the text: (BASE, HEAD) that put back together give it, neither side empty or
    an option, or InputError `bad-range`; never another exception."""
    text = "".join(pieces)
    try:
        base, head = parse_range(text)
    except InputError as exc:
        assert exc.code == "bad-range"
        return
    assert f"{base}..{head}" == text
    assert base and head and not base.startswith("-") and not head.startswith(("-", "."))


@pytest.fixture(scope="module")
def artifact_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-artifacts")
    for rel in ("dist/a.whl", "dist/sub/b.whl", "README", ".git/config", "x/.git"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "link.whl").symlink_to(root / "dist" / "a.whl")
    return root


@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")  # re, on `[[`
@FUZZ
@given(pieces=st.lists(st.sampled_from(_GLOB_PIECES) | st.text(max_size=3), max_size=6))
def test_a_glob_selects_regular_files_inside_or_is_refused(
    artifact_root: Path, pieces: list[str]
) -> None:
    """Any glob: regular files under the root, never under .git, never a symlink, each once;
    or InputError `bad-glob` / `artifact-glob-empty`."""
    glob = "".join(pieces)
    try:
        found = match_artifacts(artifact_root, [glob, glob])
    except InputError as exc:
        assert exc.code in ("bad-glob", "artifact-glob-empty"), exc.code
        return
    assert found and len(found) == len(set(found))
    for path in found:
        relative = path.relative_to(artifact_root)
        assert ".git" not in relative.parts and not path.is_symlink() and path.is_file()
