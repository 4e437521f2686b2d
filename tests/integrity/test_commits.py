"""`sealgate commits` on repositories built with real git, ssh-keygen and gpg."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.components.cli import sealgate
from tests.components.gitrepo import GpgUser, Repo, SshUser, gpg_user, make_repo, ssh_user


def _policy(signers: list[tuple[str, list[str], list[str], list[str]]], rules: str = "") -> str:
    lines = ["version: 1", "signers:"]
    for name, roles, ssh, openpgp in signers:
        lines += [f"  - name: {name}", f"    roles: [{', '.join(roles)}]"]
        if ssh:
            lines.append("    ssh: [" + ", ".join(f'"{key}"' for key in ssh) + "]")
        if openpgp:
            lines.append("    openpgp: [" + ", ".join(f'"{path}"' for path in openpgp) + "]")
    return "\n".join(lines) + "\n" + rules


def _raw_commit(repo: Repo, rev: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo.path), "cat-file", "commit", rev],
                          capture_output=True, check=True).stdout  # fmt: skip


def _write_commit(repo: Repo, raw: bytes) -> str:
    """Store a hand-edited commit object, as an attacker with push access could."""
    return subprocess.run(
        ["git", "-C", str(repo.path), "hash-object", "-t", "commit", "-w", "--stdin"],
        input=raw, capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip


@pytest.fixture
def people(tmp_path: Path) -> dict[str, SshUser]:
    keys = tmp_path / "keys"
    keys.mkdir()
    return {name: ssh_user(keys, name) for name in ("alice", "bob", "mallory")}


@pytest.fixture
def repo(tmp_path: Path, people: dict[str, SshUser]) -> Repo:
    """Alice (developer, policy-admin) and Bob (developer) are allowed; the base is tagged."""
    repo = make_repo(tmp_path)
    alice, bob = people["alice"], people["bob"]
    repo.write(".sealgate/policy.yml", _policy([
        ("alice", ["developer", "policy-admin"], [alice.public_line], []),
        ("bob", ["developer"], [bob.public_line], []),
    ]))  # fmt: skip
    repo.commit_ssh(alice, "add the signing policy")
    repo.git("tag", "base")
    return repo


def _check(repo: Repo, *extra: str) -> tuple[int, dict[str, object]]:
    result = sealgate("commits", "--repo", repo.path, "--range", "base..HEAD", "--json", *extra)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def _reasons(report: dict[str, object]) -> dict[str, str | None]:
    commits = report["commits"]
    assert isinstance(commits, list)
    return {c["subject"]: c["reason"] for c in commits}


def test_signed_history_verifies_and_failures_are_named(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    repo.write("src/app.py", "print(1)\n")
    repo.commit_ssh(people["alice"], "alice adds the app")
    repo.write("src/app.py", "print(2)\n")
    repo.commit_ssh(people["bob"], "bob changes the app")
    repo.write("src/app.py", "print(3)\n")
    repo.commit_ssh(None, "nobody signs")
    repo.write("src/app.py", "print(4)\n")
    repo.commit_ssh(people["mallory"], "mallory signs")
    code, report = _check(repo)
    assert code == 1
    reasons = _reasons(report)
    assert reasons["alice adds the app"] is None
    assert reasons["bob changes the app"] is None
    assert reasons["nobody signs"] == "unsigned"
    assert str(reasons["mallory signs"]).startswith("unknown key SHA256:")
    assert report["failed"] == 2
    human = sealgate("commits", "--repo", repo.path, "--range", "base..HEAD")
    assert human.returncode == 1
    lines = human.stdout.splitlines()
    assert any("'nobody signs': unsigned" in line for line in lines)
    assert lines[-1].startswith("2 verified, 2 failed")


def test_valid_signature_over_a_modified_commit_is_refused(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    repo.write("src/app.py", "safe\n")
    oid = repo.commit_ssh(people["alice"], "alice signs this")
    raw = _raw_commit(repo, oid)
    forged = raw.replace(b"alice signs this", b"alice signs that")
    new_oid = _write_commit(repo, forged)
    repo.git("update-ref", "refs/heads/main", new_oid)
    code, report = _check(repo)
    assert code == 1
    assert str(_reasons(report)["alice signs that"]).startswith("bad signature")


def test_key_removed_by_a_policy_admin_and_a_back_dated_commit(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    alice, bob = people["alice"], people["bob"]
    repo.write("f", "1\n")
    repo.commit_ssh(bob, "bob before removal")
    repo.write(".sealgate/policy.yml", _policy([
        ("alice", ["developer", "policy-admin"], [alice.public_line], []),
    ]))  # fmt: skip
    removal = repo.commit_ssh(alice, "alice removes bob")
    repo.write("f", "2\n")
    old = "2001-01-01T00:00:00+0000"
    repo.commit_ssh(bob, "bob back-dated", GIT_COMMITTER_DATE=old, GIT_AUTHOR_DATE=old)
    code, report = _check(repo)
    assert code == 1
    reasons = _reasons(report)
    assert reasons["bob before removal"] is None
    assert reasons["alice removes bob"] is None
    assert f"removed by commit {removal}" in str(reasons["bob back-dated"])


def test_policy_change_by_a_non_admin_fails_and_does_not_take_effect(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    alice, bob, mallory = people["alice"], people["bob"], people["mallory"]
    repo.write(".sealgate/policy.yml", _policy([
        ("alice", ["developer", "policy-admin"], [alice.public_line], []),
        ("bob", ["developer", "policy-admin"], [bob.public_line], []),
        ("mallory", ["developer"], [mallory.public_line], []),
    ]))  # fmt: skip
    repo.commit_ssh(bob, "bob lets mallory in")
    repo.write("f", "x\n")
    repo.commit_ssh(mallory, "mallory commits")
    code, report = _check(repo)
    assert code == 1
    reasons = _reasons(report)
    assert "needs role policy-admin" in str(reasons["bob lets mallory in"])
    assert str(reasons["mallory commits"]).startswith("unknown key")


def test_merge_commits_are_checked_each_on_their_own(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    alice, bob = people["alice"], people["bob"]
    repo.git("checkout", "-q", "-b", "feature")
    repo.write("feature.txt", "f\n")
    repo.commit_ssh(None, "unsigned feature work")
    repo.git("checkout", "-q", "main")
    repo.write("main.txt", "m\n")
    repo.commit_ssh(bob, "bob on main")
    repo.git("-c", "gpg.format=ssh", "-c", f"user.signingkey={alice.key}", "merge", "-q", "-S",
             "--no-edit", "-m", "alice merges feature", "feature")  # fmt: skip
    code, report = _check(repo)
    assert code == 1
    reasons = _reasons(report)
    assert reasons["alice merges feature"] is None
    assert reasons["unsigned feature work"] == "unsigned"


def test_rules_need_a_role_for_protected_paths(tmp_path: Path, people: dict[str, SshUser]) -> None:
    repo = make_repo(tmp_path)
    alice, bob = people["alice"], people["bob"]
    repo.write(".sealgate/policy.yml", _policy(
        [("alice", ["developer", "policy-admin", "release-manager"], [alice.public_line], []),
         ("bob", ["developer"], [bob.public_line], [])],
        'rules:\n  - paths: [".github/workflows/**"]\n    require: release-manager\n',
    ))  # fmt: skip
    repo.commit_ssh(alice, "policy")
    repo.git("tag", "base")
    repo.write(".github/workflows/release.yml", "on: push\n")
    repo.commit_ssh(bob, "bob edits the release workflow")
    repo.write(".github/workflows/release.yml", "on: tag\n")
    repo.commit_ssh(alice, "alice edits the release workflow")
    repo.write("docs/readme.md", "hi\n")
    repo.commit_ssh(bob, "bob edits docs")
    code, report = _check(repo)
    assert code == 1
    reasons = _reasons(report)
    assert "key not allowed for this path: needs role release-manager" in str(
        reasons["bob edits the release workflow"]
    )
    assert reasons["alice edits the release workflow"] is None
    assert reasons["bob edits docs"] is None


def test_ssh_signature_with_the_wrong_namespace(
    repo: Repo, people: dict[str, SshUser], tmp_path: Path
) -> None:
    """A signature made for `file` must not pass as a commit signature (namespace `git`)."""
    repo.write("f", "1\n")
    repo.commit_ssh(None, "to be signed with the wrong namespace")
    raw = _raw_commit(repo, "HEAD")
    payload = tmp_path / "payload"
    payload.write_bytes(raw)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "file", "-f", str(people["alice"].key),
                    str(payload)], check=True, capture_output=True)  # fmt: skip
    signature = (tmp_path / "payload.sig").read_bytes().decode().rstrip("\n").split("\n")
    header, _, message = raw.partition(b"\n\n")
    gpgsig = "gpgsig " + "\n ".join(signature)
    forged = header + b"\n" + gpgsig.encode() + b"\n\n" + message
    oid = _write_commit(repo, forged)
    repo.git("update-ref", "refs/heads/main", oid)
    code, report = _check(repo)
    assert code == 1
    assert "namespace" in str(_reasons(report)["to be signed with the wrong namespace"])


def test_openpgp_signed_commits_and_signed_tag(tmp_path: Path, people: dict[str, SshUser]) -> None:
    repo = make_repo(tmp_path)
    carol: GpgUser = gpg_user(repo, "Carol")
    dave: GpgUser = gpg_user(repo, "Dave")
    repo.write(".sealgate/keys/carol.asc", carol.armored)
    repo.write(".sealgate/policy.yml", _policy([
        ("alice", ["developer", "policy-admin"], [people["alice"].public_line], []),
        ("carol", ["developer"], [], ["keys/carol.asc"]),
    ]))  # fmt: skip
    repo.commit_ssh(people["alice"], "policy with carol's OpenPGP key")
    repo.git("tag", "base")
    repo.write("f", "1\n")
    repo.commit_gpg(carol, "carol signs with gpg")
    repo.write("f", "2\n")
    repo.commit_gpg(dave, "dave signs with gpg")
    code, report = _check(repo)
    assert code == 1
    reasons = _reasons(report)
    assert reasons["carol signs with gpg"] is None
    assert "unknown key" in str(reasons["dave signs with gpg"])

    repo.git("-c", "gpg.format=openpgp", "-c", f"user.signingkey={carol.fingerprint}",
             "tag", "-s", "v1.0", "-m", "release 1.0", "HEAD~1")  # fmt: skip
    tag = sealgate(
        "commits", "--repo", repo.path, "--policy-rev", "base", "--tag", "v1.0", "--json"
    )
    assert tag.returncode == 0, tag.stdout + tag.stderr
    assert json.loads(tag.stdout)["commits"][0]["signer"] == "carol"


def test_verdicts_match_git_log_on_a_valid_ssh_history(
    repo: Repo, people: dict[str, SshUser], tmp_path: Path
) -> None:
    """Cross-check: commit by commit, Sealgate says what `git log --format=%G?` says."""
    for i in range(6):
        repo.write("f", f"{i}\n")
        repo.commit_ssh(people["alice"] if i % 2 else people["bob"], f"change {i}")
    repo.write("f", "unsigned\n")
    repo.commit_ssh(None, "unsigned")
    repo.write("f", "mallory\n")
    repo.commit_ssh(people["mallory"], "unknown signer")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(
        "".join(f"{n}@example.com {people[n].public_line}\n" for n in ("alice", "bob"))
    )
    log = repo.git("-c", f"gpg.ssh.allowedSignersFile={allowed}", "log", "--format=%H %G?",
                   "base..HEAD")  # fmt: skip
    git_says = {line.split()[0]: line.split()[1] == "G" for line in log.splitlines()}
    _, report = _check(repo, "--no-cache")
    commits = report["commits"]
    assert isinstance(commits, list)
    assert {c["oid"]: c["verified"] for c in commits} == git_says
    assert list(git_says.values()).count(True) == 6
    codes = {c["subject"]: c["code"] for c in commits}
    assert (codes["unsigned"], codes["unknown signer"]) == ("unsigned", "unknown-key")
    assert {c["code"] for c in commits if c["verified"]} == {None}
    assert set(commits[0]) == {"verified", "reason", "code", "oid", "author", "subject", "signer"}


def test_cache_reuses_verdicts_and_no_cache_bypasses(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    repo.write("f", "1\n")
    repo.commit_ssh(people["bob"], "bob")
    first = _check(repo)
    cache = repo.path / ".git" / "sealgate" / "commit-verdicts-v3.json"
    entries = json.loads(cache.read_text())
    assert len(entries) == 1 and all(e["verified"] for e in entries.values())
    assert first[0] == 0
    # a marked cache entry shows that the cache is read, and --no-cache that it is bypassed
    key = next(iter(entries))
    entries[key]["reason"] = "from the cache"
    cache.write_text(json.dumps(entries))
    assert _reasons(_check(repo)[1])["bob"] == "from the cache"
    code, report = _check(repo, "--no-cache")
    assert code == 0 and _reasons(report)["bob"] is None
    # a failed verdict keeps its reason code through the cache
    repo.write("f", "2\n")
    repo.commit_ssh(None, "unsigned")
    for _ in range(2):
        code, report = _check(repo)
        listed = report["commits"]
        assert code == 1 and isinstance(listed, list)
        assert [c["code"] for c in listed] == [None, "unsigned"]
    assert "unsigned" in {e["code"] for e in json.loads(cache.read_text()).values()}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--range", "nope..HEAD"], "range-unresolved", "'nope' does not resolve to a commit"),
        (["--range", "base"], "bad-range", "use BASE..HEAD"),
        (["--range", "base..nope"], "range-unresolved", "'nope' does not resolve to a commit"),
        (["--range", "base.. HEAD"], "bad-range", "use BASE..HEAD"),
        (["--policy-rev", "nope", "--range", "base..HEAD"], "commit-unresolved", "'nope'"),
    ],
)
def test_bad_ranges(repo: Repo, args: list[str], code: str, message: str) -> None:
    result = sealgate("commits", "--repo", repo.path, *args, "--json")
    assert result.returncode == 2
    assert message in result.stderr
    assert f"[{code}]" in result.stderr
    assert json.loads(result.stdout)["error"]["code"] == code


def test_policy_errors_name_file_and_line(tmp_path: Path, people: dict[str, SshUser]) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(_policy(
        [("alice", ["developer"], [people["alice"].public_line], [])],
        'rules:\n  - paths: ["deploy/**"]\n    require: release-manager\n',
    ))  # fmt: skip
    repo = make_repo(tmp_path)
    repo.commit_ssh(people["alice"], "first")
    repo.git("tag", "base")
    result = sealgate("commits", "--repo", repo.path, "--range", "base..HEAD", "--policy", policy)
    assert result.returncode == 2
    assert (
        f"{policy} line 7: rule requires role 'release-manager', which no signer holds"
        in result.stderr
    )
    policy.write_text(_policy([("alice", ["developer"], ["ssh-ed25519 not-base64!"], [])]))
    bad_key = sealgate("commits", "--repo", repo.path, "--range", "base..HEAD", "--policy", policy)
    assert bad_key.returncode == 2
    assert f"{policy} line 3" in bad_key.stderr


def test_long_range_verified_on_all_cores_gives_the_same_verdicts(
    repo: Repo, people: dict[str, SshUser]
) -> None:
    """Past 200 SSH commits the signatures are checked in worker processes; verdicts must not
    change: a forged commit and an unknown signer in the middle are still caught."""
    alice, mallory = people["alice"], people["mallory"]
    head = repo.git("rev-parse", "HEAD")
    tree = repo.git("rev-parse", "HEAD^{tree}")
    for i in range(230):
        user = mallory if i == 100 else alice
        head = repo.git("-c", "gpg.format=ssh", "-c", f"user.signingkey={user.key}",
                        "commit-tree", "-S", "-p", head, "-m", f"commit {i}", tree)  # fmt: skip
        if i == 150:  # forge this one: same signature, edited message, rewritten object
            raw = _raw_commit(repo, head)
            head = _write_commit(repo, raw.replace(b"commit 150", b"commit 15O"))
    repo.git("update-ref", "refs/heads/main", head)
    code, report = _check(repo, "--no-cache")
    assert code == 1
    reasons = _reasons(report)
    failing = {subject: reason for subject, reason in reasons.items() if reason is not None}
    assert set(failing) == {"commit 100", "commit 15O"}
    assert str(failing["commit 100"]).startswith("unknown key")
    assert str(failing["commit 15O"]).startswith("bad signature")


def test_rotating_a_key_file_is_a_policy_change(tmp_path: Path, people: dict[str, SshUser]) -> None:
    """Key files beside the policy are part of it: replacing one needs a policy-admin, and the
    old key stops counting from that commit on (also for cached verdicts)."""
    repo = make_repo(tmp_path)
    alice = people["alice"]
    carol, dave = gpg_user(repo, "Carol"), gpg_user(repo, "Dave")
    repo.write(".sealgate/keys/release.asc", carol.armored)
    repo.write(".sealgate/policy.yml", _policy([
        ("alice", ["developer", "policy-admin"], [alice.public_line], []),
        ("release", ["developer"], [], ["keys/release.asc"]),
    ]))  # fmt: skip
    repo.commit_ssh(alice, "policy")
    repo.git("tag", "base")
    repo.write("f", "1\n")
    repo.commit_gpg(carol, "carol before rotation")
    repo.write(".sealgate/keys/release.asc", dave.armored)
    rotation = repo.commit_ssh(alice, "alice rotates the release key to dave")
    repo.write("f", "2\n")
    repo.commit_gpg(dave, "dave after rotation")
    repo.write("f", "3\n")
    repo.commit_gpg(carol, "carol after rotation")
    for _ in range(2):  # cold, then from the cache
        code, report = _check(repo)
        assert code == 1
        reasons = _reasons(report)
        assert reasons["carol before rotation"] is None
        assert reasons["dave after rotation"] is None
        assert reasons["carol after rotation"] == f"key removed by commit {rotation}"


def test_x509_signatures_are_unsupported_never_valid(repo: Repo) -> None:
    repo.write("f", "1\n")
    repo.commit_ssh(None, "gitsign-style commit")
    raw = _raw_commit(repo, "HEAD")
    header, _, message = raw.partition(b"\n\n")
    cms = b"gpgsig -----BEGIN SIGNED MESSAGE-----\n MIIBxx==\n -----END SIGNED MESSAGE-----"
    oid = _write_commit(repo, header + b"\n" + cms + b"\n\n" + message)
    repo.git("update-ref", "refs/heads/main", oid)
    code, report = _check(repo)
    assert code == 1
    assert str(_reasons(report)["gitsign-style commit"]).startswith("unsupported signature type")


def test_forge_merges_are_accepted_only_when_the_policy_enables_them(
    tmp_path: Path, people: dict[str, SshUser]
) -> None:
    repo = make_repo(tmp_path)
    alice, bob = people["alice"], people["bob"]
    forge = gpg_user(repo, "WebFlow")
    repo.write(".sealgate/keys/web-flow.asc", forge.armored)
    repo.write(".sealgate/policy.yml", _policy([
        ("alice", ["developer", "policy-admin"], [alice.public_line], []),
        ("bob", ["developer"], [bob.public_line], []),
    ]) + 'forge:\n  github-web-flow: merges-only\n  openpgp: ["keys/web-flow.asc"]\n')  # fmt: skip
    repo.commit_ssh(alice, "policy trusting the forge for merges")
    repo.git("tag", "base")
    repo.git("checkout", "-q", "-b", "pr")
    repo.write("feature.txt", "f\n")
    repo.commit_ssh(bob, "bob's pull request")
    repo.git("checkout", "-q", "main")
    repo.git("-c", "gpg.format=openpgp", "-c", f"user.signingkey={forge.fingerprint}", "merge",
             "-q", "-S", "--no-ff", "-m", "Merge pull request #1", "pr")  # fmt: skip
    repo.write("direct.txt", "d\n")
    repo.commit_gpg(forge, "forge-made direct commit")
    code, report = _check(repo)
    assert code == 1
    reasons = _reasons(report)
    assert reasons["bob's pull request"] is None
    assert reasons["Merge pull request #1"] is None
    assert "accepts the forge key for merges only" in str(reasons["forge-made direct commit"])
