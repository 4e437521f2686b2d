"""`sealgate commits`: every commit of a range signed by a key the trusted policy allows.

The policy comes from the trusted base revision, never from the commits under test. A commit
that changes the policy must be signed by a policy-admin under the policy in force before it;
only then does its policy apply to its descendants. Key validity follows the commit graph:
committer dates are signer-controlled and never consulted.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import posixpath
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from integrity.errors import (
    InputError,
    SignatureError,
    UnknownKeyError,
    UnsupportedSignatureError,
)
from integrity.files import KEY_FILE_LIMIT, POLICY_LIMIT
from integrity.gitobjects import (
    SHALLOW_MESSAGE,
    Commit,
    MalformedObjectError,
    ObjectReader,
    SignedObject,
    git,
    parse_commit,
    parse_tag,
    shallow_commits,
    split_commit,
    split_tag,
)
from integrity.openpgp import OpenPgpKey
from integrity.policy import ADMIN_ROLE, DEFAULT_ROLE, POLICY_PATH, Policy, Signer, load_policy
from integrity.repository import open_repository, resolve_commit
from integrity.sshsig import SshPublicKey, verify_sshsig

_SSH = b"-----BEGIN SSH SIGNATURE-----"
_PGP = b"-----BEGIN PGP SIGNATURE-----"
#: v2: merges judged against every parent; v3: `verified` (was `ok`) and the reason `code`
CACHE_FILE = "sealgate/commit-verdicts-v3.json"
POLICY_DIR = posixpath.dirname(POLICY_PATH)


@dataclass(frozen=True)
class Verdict:
    """The judgement of one commit (or tag); `code` is the stable reason when not verified."""

    oid: str
    author: str
    subject: str
    verified: bool
    reason: str | None
    signer: str | None
    policy_digest: str
    code: str | None = None

    def line(self) -> str:
        return f"{self.oid[:12]} {self.author} {self.subject!r}: {self.reason}"

    def as_json(self) -> dict[str, object]:
        """The report shape of a commit verdict (`verified`, `reason`, `code` as in verify's)."""
        return {
            "verified": self.verified,
            "reason": self.reason,
            "code": self.code,
            "oid": self.oid,
            "author": self.author,
            "subject": self.subject,
            "signer": self.signer,
        }


@dataclass(frozen=True)
class PolicyState:
    """A policy in force, the commit that brought it in, and the one it replaced."""

    policy: Policy
    introduced_by: str | None
    previous: PolicyState | None


class Repository:
    """Reads a repository's objects through one cat-file process."""

    def __init__(self, path: Path) -> None:
        path = self.path = open_repository(path, need_work_tree=False)
        self.git_dir = Path(git(path, "rev-parse", "--absolute-git-dir").decode().strip())
        self.object_format = git(path, "rev-parse", "--show-object-format").decode().strip()
        self.shallow = shallow_commits(path)
        self.reader = ObjectReader(path)
        self._trees: dict[str, str] = {}

    def resolve(self, rev: str, *, field: str = "range", code: str | None = None) -> str:
        """The commit id of `rev` (integrity.repository's one set of rules)."""
        if code is None:
            code = "range-unresolved"
        return resolve_commit(self.path, rev, field=field, code=code)

    def commit(self, oid: str) -> Commit:
        """A commit object, parsed strictly (MalformedObjectError when git would read it
        differently); its tree id is remembered for diffing its children."""
        kind, raw = self.reader.read(oid)
        if kind != "commit":
            raise InputError(f"{oid} is a {kind}, not a commit", code="not-a-commit")
        commit = parse_commit(oid, raw)
        self._trees[oid] = commit.tree
        return commit

    def tree_of(self, oid: str) -> str:
        tree = self._trees.get(oid)
        return tree if tree is not None else self.commit(oid).tree

    def policy_entry(self, tree: str | None) -> tuple[int, str] | None:
        """The `.sealgate` entry (mode, id) of a tree: a commit whose entry differs from a
        parent's changes the policy or its key files."""
        if tree is None:
            return None
        return self.reader.tree(tree).get(POLICY_DIR.encode())

    def policy_at(self, commit_oid: str) -> Policy:
        """The policy file of a revision, its key files read from the same revision."""
        tree = self.tree_of(commit_oid)
        blob = self.reader.tree_entry(tree, POLICY_PATH)
        if blob is None:
            raise InputError(
                f"{commit_oid[:12]} has no {POLICY_PATH}",
                hint="commit a policy on the base revision, or give a policy file from outside "
                "the repository",
                code="policy-missing",
            )
        source = f"{POLICY_PATH}@{commit_oid[:12]}"
        return load_policy(
            self._blob(blob, source, POLICY_LIMIT),
            source=source,
            read_file=lambda rel: self._read_beside_policy(tree, rel),
        )

    def _blob(self, oid: str, what: str, limit: int) -> bytes:
        kind, data = self.reader.read(oid, limit=limit, what=what)
        if kind != "blob":
            raise InputError(f"{what}: a {kind}, not a file", code="policy-invalid")
        return data

    def _read_beside_policy(self, tree: str, relative: str) -> bytes:
        path = posixpath.normpath(posixpath.join(POLICY_DIR, relative))
        if posixpath.isabs(relative) or not path.startswith(POLICY_DIR + "/"):
            raise InputError(
                f"key file {relative!r} is outside {POLICY_DIR}/", code="policy-invalid"
            )
        blob = self.reader.tree_entry(tree, path)
        if blob is None:
            raise InputError(f"key file {relative!r} not in the revision", code="policy-invalid")
        return self._blob(blob, f"key file {path}", KEY_FILE_LIMIT)

    def changed_paths(self, commit: Commit) -> set[str]:
        """The paths a commit changes against EACH of its parents (the union; a root commit
        against the empty tree), diffed from the tree objects themselves."""
        if not commit.parents:
            return self.reader.changed_paths(commit.tree, None)
        changed: set[str] = set()
        for parent in commit.parents:
            changed |= self.reader.changed_paths(commit.tree, self.tree_of(parent))
        return changed


class CommitChecker:
    """Judges the commits of a range under the policy of its trusted base, following the graph.

    A merge is judged under the policy in force on EVERY parent's line (sequoia-git accepts it
    when any parent's policy does; we choose the stricter rule on purpose).
    """

    def __init__(
        self, repo: Repository, base_policy: Policy, *, fixed_policy: bool = False
    ) -> None:
        self.repo = repo
        self.base = PolicyState(base_policy, None, None)
        self.fixed_policy = fixed_policy
        self._ssh: SshPrecheck | None = None

    def check_range(
        self, base: str, head: str, *, cache: dict[str, dict[str, object]] | None
    ) -> list[Verdict]:
        base_oid, head_oid = self.repo.resolve(base), self.repo.resolve(head)
        listing = git(
            self.repo.path, "rev-list", "--topo-order", "--reverse", "--parents",
            head_oid, f"^{base_oid}", "--",
        )  # fmt: skip
        entries = [line.split() for line in listing.decode().splitlines()]
        if not entries:  # "0 verified" would be a pass that proved nothing
            raise InputError(
                f"range {base}..{head} holds no commits: nothing to prove",
                hint="BASE already contains HEAD; give the range since the last trusted base",
                code="empty-range",
                field="range",
            )
        for oid, *_ in entries:
            if oid in self.repo.shallow:
                raise InputError(f"commit {oid}: {SHALLOW_MESSAGE}", code="shallow-clone")
        cached_oids = {key.partition(":")[0] for key in cache or {}}
        with SshPrecheck(self.repo, [e[0] for e in entries if e[0] not in cached_oids]) as ssh:
            self._ssh = ssh
            # the policies in force on a commit's lines: it must satisfy each of them
            states: dict[str, list[PolicyState]] = {}
            verdicts: list[Verdict] = []
            for oid, *parents in entries:
                inherited = [s for p in parents for s in states.get(p, [self.base])]
                distinct = list({s.policy.digest: s for s in inherited or [self.base]}.values())
                verdict, states[oid] = self._check_commit(oid, parents, distinct, cache)
                verdicts.append(verdict)
        self._ssh = None
        return verdicts

    def _check_commit(
        self,
        oid: str,
        listed_parents: list[str],
        states: list[PolicyState],
        cache: dict[str, dict[str, object]] | None,
    ) -> tuple[Verdict, list[PolicyState]]:
        """The verdict on one commit under every policy in force on its parents' lines, and
        the policies in force for its children (one, once a valid policy change lands)."""
        digest = states[0].policy.digest
        try:
            commit = self.repo.commit(oid)
        except MalformedObjectError as exc:
            subject = self.repo.reader.read(oid)[1].partition(b"\n\n")[2].split(b"\n", 1)[0]
            reason = exc.message
            return Verdict(oid, "", subject.decode(errors="replace"), False, reason, None,
                           digest, exc.code), states  # fmt: skip
        if list(commit.parents) != listed_parents:
            raise InputError(
                f"commit {oid}: git lists other parents than the object holds",
                code="parents-mismatch",
            )
        key = f"{oid}:{'+'.join(state.policy.digest for state in states)}"
        verdict = _cached(cache, key, commit.author, commit.subject)
        try:
            own = self.repo.policy_entry(commit.tree)
            parent_trees: list[str | None] = [self.repo.tree_of(p) for p in commit.parents]
            policy_changed = any(self.repo.policy_entry(t) != own for t in parent_trees or [None])
            if verdict is None:
                verdict = self._judge_everywhere(commit, states, policy_changed)
        except MalformedObjectError as exc:
            verdict = Verdict(
                oid, commit.author, commit.subject, False, exc.message, None, digest, exc.code
            )
            policy_changed = False
        if cache is not None:
            cache[key] = asdict(verdict)
        if self.fixed_policy:
            return verdict, [self.base]
        if not verdict.verified or not policy_changed:
            return verdict, states
        try:
            policy = self.repo.policy_at(oid)
        except InputError as exc:
            verdict = Verdict(oid, commit.author, commit.subject, False,
                              f"the policy it commits is unusable: {exc.message}", verdict.signer,
                              digest, code="policy-change-invalid")  # fmt: skip
            if cache is not None:
                cache[key] = asdict(verdict)
            return verdict, states
        for state in states:  # the same policy as a parent line's: keep that line's history
            if state.policy.digest == policy.digest:
                return verdict, [state]
        return verdict, [PolicyState(policy, oid, states[0])]

    def _judge_everywhere(
        self, commit: Commit, states: list[PolicyState], policy_changed: bool
    ) -> Verdict:
        """Valid only if the policy of every parent's line allows the signer with the roles the
        commit's paths (against every parent) need there."""
        # the paths matter only for `rules:`; without any, skip the tree diff
        paths = (
            sorted(self.repo.changed_paths(commit)) if any(s.policy.rules for s in states) else []
        )
        signed = split_commit(commit.raw, self.repo.object_format)
        verdict: Verdict | None = None
        for state in states:
            required = state.policy.required_roles(paths)
            if policy_changed:
                required.add(ADMIN_ROLE)
            judged = self._judge(
                commit.oid, commit.author, commit.subject, signed, state, required,
                len(commit.parents) > 1,
            )  # fmt: skip
            if not judged.verified:
                return judged
            verdict = verdict or judged
        assert verdict is not None  # noqa: S101 - there is always one state
        return verdict

    def _judge(
        self,
        oid: str,
        author: str,
        subject: str,
        signed: SignedObject,
        state: PolicyState,
        required: set[str],
        is_merge: bool,
    ) -> Verdict:
        policy = state.policy

        def fail(reason: str, *, code: str, signer: str | None = None) -> Verdict:
            return Verdict(oid, author, subject, False, reason, signer, policy.digest, code)

        if signed.signature is None:
            return fail("unsigned", code="unsigned")
        try:
            signer = self._signer(oid, signed, state, is_merge)
        except (UnknownKeyError, UnsupportedSignatureError) as exc:
            return fail(exc.message, code=exc.code)
        except SignatureError as exc:
            return fail(f"bad signature: {exc.message}", code=exc.code)
        if signer is None:  # accepted forge merge
            return Verdict(
                oid, author, subject, True, None, "forge (github-web-flow)", policy.digest
            )
        missing = sorted(required - signer.roles)
        if missing:
            code = "role-missing"
            if ADMIN_ROLE in missing:
                code = "policy-change-unauthorised"
            return fail(
                f"key not allowed for this path: needs role {', '.join(missing)}; "
                f"{signer.name} has {', '.join(sorted(signer.roles)) or 'no role'}",
                code=code,
                signer=signer.name,
            )
        return Verdict(oid, author, subject, True, None, signer.name, policy.digest)

    def _signer(
        self, oid: str, signed: SignedObject, state: PolicyState, is_merge: bool
    ) -> Signer | None:
        """The policy signer who made this valid signature (None: an accepted forge merge)."""
        assert signed.signature is not None  # noqa: S101 - checked by the caller
        signature = signed.signature.lstrip()
        policy = state.policy
        if signature.startswith(_SSH):
            key = self._ssh.result(oid) if self._ssh else None
            if key is None:
                key = verify_sshsig(signature, signed.payload, namespace="git")
            signer = policy.signer_for_ssh(key)
            if signer is None:
                reason, code = self._unknown(state, lambda p: p.signer_for_ssh(key), key)
                raise UnknownKeyError(reason, code=code)
            return signer
        if signature.startswith(_PGP):
            try:
                pgp_key = policy.keyring.verify(signature, signed.payload)
            except UnknownKeyError as unknown:
                if policy.forge_web_flow:
                    try:
                        policy.forge_keyring.verify(signature, signed.payload)
                    except UnknownKeyError:
                        pass
                    else:
                        if policy.forge_web_flow == "all" or is_merge:
                            return None
                        raise UnknownKeyError(
                            "forge-made commit: the policy accepts the forge key for merges only",
                            code="key-not-allowed",
                        ) from None
                removed = self._removed_openpgp(state, signature, signed.payload)
                if removed:
                    raise UnknownKeyError(removed, code="key-removed") from None
                raise UnknownKeyError(f"unknown key: {unknown.message}") from None
            found = policy.signer_for_openpgp(pgp_key)
            if found is None:  # pragma: no cover - the keyring holds only policy keys
                raise UnknownKeyError(f"unknown key {pgp_key.fingerprint}")
            return found
        raise UnsupportedSignatureError(
            "unsupported signature type (only SSH and OpenPGP signatures are verified)"
        )

    def _unknown(
        self, state: PolicyState, lookup: Callable[[Policy], Signer | None], key: SshPublicKey
    ) -> tuple[str, str]:
        """(reason, code): removed by which policy change, or never listed."""
        current: PolicyState | None = state
        while current is not None and current.previous is not None:
            if lookup(current.previous.policy) is not None and lookup(current.policy) is None:
                reason = f"key {key.fingerprint} removed by commit {current.introduced_by}"
                return reason[:200], "key-removed"
            current = current.previous
        return f"unknown key {key.fingerprint}", "unknown-key"

    def _removed_openpgp(self, state: PolicyState, signature: bytes, payload: bytes) -> str | None:
        current: PolicyState | None = state
        while current is not None and current.previous is not None:
            try:
                current.previous.policy.keyring.verify(signature, payload)
            except SignatureError:
                current = current.previous
                continue
            return f"key removed by commit {current.introduced_by}"
        return None

    def check_tag(self, tag: str, head: str | None = None) -> Verdict:
        """A signed annotated tag, judged under the base policy: its own `tag` field must be
        its ref name, it must tag a commit directly, and (with a range) the range's head."""
        name = tag.removeprefix("refs/tags/")
        subject = f"tag {name}"
        try:
            oid = (
                git(self.repo.path, "rev-parse", "--verify", "--quiet", "--end-of-options",
                    f"refs/tags/{name}")
                .decode()
                .strip()
            )  # fmt: skip
        except InputError:
            raise InputError(
                f"tag {tag}: no such tag in {self.repo.path}", code="tag-unresolved", field="tag"
            ) from None
        digest = self.base.policy.digest

        def fail(reason: str, *, code: str, tagger: str = "") -> Verdict:
            return Verdict(oid, tagger, subject, False, reason, None, digest, code)

        kind, raw = self.repo.reader.read(oid)
        if kind != "tag":
            return fail(
                f"tag {name} is a lightweight tag (a {kind}), not a signed tag object",
                code="unsigned",
            )
        try:
            parsed = parse_tag(oid, raw)
        except MalformedObjectError as exc:
            return fail(exc.message, code=exc.code)
        if parsed.name != name:
            return fail(
                f"tag object says {parsed.name!r}, not {name!r}",
                code="tag-name-mismatch",
                tagger=parsed.tagger,
            )
        if parsed.target_type != "commit":
            return fail(
                f"tag {name} points at a {parsed.target_type}, not a commit",
                code="tag-target-not-commit",
                tagger=parsed.tagger,
            )
        if head is not None and parsed.target != head:
            return fail(
                f"tag {name} points at {parsed.target}, not the range head {head}",
                code="tag-not-at-head",
                tagger=parsed.tagger,
            )
        signed = split_tag(raw)
        return self._judge(oid, parsed.tagger, subject, signed, self.base, {DEFAULT_ROLE}, False)

    def trusted_tag(self, below: str) -> tuple[str, str] | None:
        """(tag name, commit) of the newest annotated tag reachable from `below` whose
        signature verifies under the base policy and whose `tag` field is its ref name."""
        below_oid = self.repo.resolve(below)
        listing = git(
            self.repo.path, "for-each-ref", "--merged", below_oid,
            "--format=%(objectname) %(objecttype) %(refname)", "refs/tags/",
        )  # fmt: skip
        by_commit: dict[str, list[str]] = {}
        for line in listing.decode(errors="surrogateescape").splitlines():
            oid, kind, ref = line.split(" ", 2)
            if kind != "tag":
                continue
            try:
                parsed = parse_tag(oid, self.repo.reader.read(oid)[1])
            except MalformedObjectError:
                continue
            if parsed.target_type == "commit":
                by_commit.setdefault(parsed.target, []).append(ref.removeprefix("refs/tags/"))
        if not by_commit:
            return None
        walk = git(self.repo.path, "rev-list", "--topo-order", below_oid, "--")
        for commit in walk.decode().split():  # children before parents: the newest first
            for name in sorted(by_commit.get(commit, ())):
                if self.check_tag(name, commit).verified:
                    return name, commit
        return None


def _cached(
    cache: dict[str, dict[str, object]] | None, key: str, author: str, subject: str
) -> Verdict | None:
    """A verdict from the cache, or None (also for an entry this version cannot read)."""
    entry = cache.get(key) if cache is not None else None
    if not isinstance(entry, dict):
        return None
    try:
        return Verdict(**{**entry, "author": author, "subject": subject})  # type: ignore[arg-type]
    except TypeError:
        return None


def _verify_ssh_chunk(jobs: list[tuple[bytes, bytes]]) -> list[SshPublicKey | None]:
    """Worker: SSH signatures are a pure function of (signature, payload); None when invalid
    (the main process then verifies again to get the exact reason)."""
    keys: list[SshPublicKey | None] = []
    for signature, payload in jobs:
        try:
            keys.append(verify_sshsig(signature, payload, namespace="git"))
        except SignatureError:
            keys.append(None)
    return keys


class SshPrecheck:
    """Verifies a range's SSH signatures on the other cores while the graph walk runs.

    Only the cryptography moves: which signer a key belongs to, under which policy, is still
    decided in order by the walk. Small ranges are not worth the worker start-up.
    """

    MIN_COMMITS = 200
    CHUNK = 64

    def __init__(self, repo: Repository, oids: list[str]) -> None:
        self._futures: dict[str, tuple[Future[list[SshPublicKey | None]], int]] = {}
        self._pool: ProcessPoolExecutor | None = None
        workers = min(4, os.cpu_count() or 1)
        if len(oids) < self.MIN_COMMITS or workers < 2:
            return
        jobs: list[tuple[str, bytes, bytes]] = []
        for oid in oids:
            signed = split_commit(repo.reader.read(oid)[1], repo.object_format)
            if signed.signature is not None and signed.signature.lstrip().startswith(_SSH):
                jobs.append((oid, signed.signature.lstrip(), signed.payload))
        if len(jobs) < self.MIN_COMMITS:
            return
        self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        for start in range(0, len(jobs), self.CHUNK):
            chunk = jobs[start : start + self.CHUNK]
            future = self._pool.submit(
                _verify_ssh_chunk, [(sig, payload) for _, sig, payload in chunk]
            )
            for index, (oid, _, _) in enumerate(chunk):
                self._futures[oid] = (future, index)

    def result(self, oid: str) -> SshPublicKey | None:
        entry = self._futures.get(oid)
        if entry is None:
            return None
        future, index = entry
        return future.result()[index]

    def __enter__(self) -> SshPrecheck:
        return self

    def __exit__(self, *_: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def load_cache(repo: Repository) -> dict[str, dict[str, object]]:
    path = repo.git_dir / CACHE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_cache(repo: Repository, cache: dict[str, dict[str, object]]) -> None:
    path = repo.git_dir / CACHE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".verdicts.", suffix=".tmp")
    with os.fdopen(fd, "w") as stream:
        json.dump(cache, stream)
    os.replace(temp, path)


__all__ = ["CommitChecker", "OpenPgpKey", "Repository", "Verdict", "load_cache", "save_cache"]
