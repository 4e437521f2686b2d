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
from integrity.gitobjects import (
    ObjectReader,
    SignedObject,
    git,
    parse_commit,
    split_commit,
    split_tag,
)
from integrity.openpgp import OpenPgpKey
from integrity.policy import ADMIN_ROLE, POLICY_PATH, Policy, Signer, load_policy
from integrity.sshsig import SshPublicKey, verify_sshsig

_SSH = b"-----BEGIN SSH SIGNATURE-----"
_PGP = b"-----BEGIN PGP SIGNATURE-----"
CACHE_FILE = "sealgate/commit-verdicts.json"


@dataclass(frozen=True)
class Verdict:
    """The judgement of one commit (or tag)."""

    oid: str
    author: str
    subject: str
    ok: bool
    reason: str | None
    signer: str | None
    policy_digest: str

    def line(self) -> str:
        return f"{self.oid[:12]} {self.author} {self.subject!r}: {self.reason}"


@dataclass(frozen=True)
class PolicyState:
    """A policy in force, the commit that brought it in, and the one it replaced."""

    policy: Policy
    introduced_by: str | None
    previous: PolicyState | None


class Repository:
    """Reads a repository's objects through one cat-file process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_dir():
            raise InputError(f"--repo {path}: no such directory")
        self.git_dir = Path(git(path, "rev-parse", "--absolute-git-dir").decode().strip())
        self.object_format = git(path, "rev-parse", "--show-object-format").decode().strip()
        self.reader = ObjectReader(path)

    def resolve(self, rev: str, kind: str = "commit") -> str:
        try:
            return (
                git(self.path, "rev-parse", "--verify", "--quiet", f"{rev}^{{{kind}}}")
                .decode()
                .strip()
            )
        except InputError:
            raise InputError(f"{rev!r} does not resolve to a {kind} in {self.path}") from None

    def policy_at(self, commit_oid: str) -> Policy:
        """The policy file of a revision, its key files read from the same revision."""
        _, raw = self.reader.read(commit_oid)
        tree = parse_commit(commit_oid, raw).tree
        blob = self.reader.tree_entry(tree, POLICY_PATH)
        if blob is None:
            raise InputError(
                f"{commit_oid[:12]} has no {POLICY_PATH}",
                hint="commit a policy on the base revision, or pass --policy FILE",
            )
        return load_policy(
            self.reader.read(blob)[1],
            source=f"{POLICY_PATH}@{commit_oid[:12]}",
            read_file=lambda rel: self._read_beside_policy(tree, rel),
        )

    def _read_beside_policy(self, tree: str, relative: str) -> bytes:
        path = posixpath.normpath(posixpath.join(posixpath.dirname(POLICY_PATH), relative))
        if path.startswith("../") or posixpath.isabs(relative):
            raise InputError(f"key file {relative!r} is outside the repository")
        blob = self.reader.tree_entry(tree, path)
        if blob is None:
            raise InputError(f"key file {relative!r} not in the revision")
        return self.reader.read(blob)[1]

    def changed_paths(self, range_spec: str) -> dict[str, list[str]]:
        """Paths each commit changes against its first parent, for the whole range in one run."""
        out = git(
            self.path, "log", "-z", "--format=%x01%H", "--raw", "--no-renames",
            "--diff-merges=first-parent", range_spec,
        )  # fmt: skip
        changed: dict[str, list[str]] = {}
        for chunk in out.split(b"\x01")[1:]:
            oid, _, rest = chunk.partition(b"\0")
            fields = rest.lstrip(b"\n").split(b"\0")
            changed[oid.decode()] = [
                fields[i + 1].decode(errors="surrogateescape")
                for i in range(0, len(fields) - 1, 2)
                if fields[i].startswith(b":")
            ]
        return changed


class CommitChecker:
    """Judges the commits of a range under the policy of its trusted base, following the graph."""

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
        range_spec = f"{base_oid}..{head_oid}"
        listing = git(
            self.repo.path, "rev-list", "--topo-order", "--reverse", "--parents", range_spec
        )
        changed = self.repo.changed_paths(range_spec)
        entries = [line.split() for line in listing.decode().splitlines()]
        cached_oids = {key.partition(":")[0] for key in cache or {}}
        with SshPrecheck(self.repo, [e[0] for e in entries if e[0] not in cached_oids]) as ssh:
            self._ssh = ssh
            states: dict[str, PolicyState] = {}
            verdicts: list[Verdict] = []
            for oid, *parents in entries:
                state = states.get(parents[0], self.base) if parents else self.base
                verdict, new_state = self._check_commit(
                    oid, parents, state, changed.get(oid, []), cache
                )
                states[oid] = new_state
                verdicts.append(verdict)
        self._ssh = None
        return verdicts

    def _check_commit(
        self,
        oid: str,
        parents: list[str],
        state: PolicyState,
        paths: list[str],
        cache: dict[str, dict[str, object]] | None,
    ) -> tuple[Verdict, PolicyState]:
        _, raw = self.repo.reader.read(oid)
        commit = parse_commit(oid, raw)
        policy_changed = POLICY_PATH in paths or any(
            p.startswith(posixpath.dirname(POLICY_PATH) + "/") for p in paths
        )
        key = f"{oid}:{state.policy.digest}"
        verdict = _cached(cache, key, commit.author, commit.subject)
        if verdict is None:
            signed = split_commit(raw, self.repo.object_format)
            required = state.policy.required_roles(paths)
            if policy_changed:
                required.add(ADMIN_ROLE)
            verdict = self._judge(
                oid, commit.author, commit.subject, signed, state, required, len(parents) > 1
            )
            if cache is not None:
                cache[key] = asdict(verdict)
        new_state = state
        if verdict.ok and policy_changed and not self.fixed_policy:
            try:
                new_state = PolicyState(self.repo.policy_at(oid), oid, state)
            except InputError as exc:
                verdict = Verdict(oid, commit.author, commit.subject, False,
                                  f"the policy it commits is unusable: {exc.message}", verdict.signer,
                                  state.policy.digest)  # fmt: skip
                if cache is not None:
                    cache[key] = asdict(verdict)
        return verdict, new_state

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

        def fail(reason: str, signer: str | None = None) -> Verdict:
            return Verdict(oid, author, subject, False, reason, signer, policy.digest)

        if signed.signature is None:
            return fail("unsigned")
        try:
            signer = self._signer(oid, signed, state, is_merge)
        except (UnknownKeyError, UnsupportedSignatureError) as exc:
            return fail(exc.message)
        except SignatureError as exc:
            return fail(f"bad signature: {exc.message}")
        if signer is None:  # accepted forge merge
            return Verdict(
                oid, author, subject, True, None, "forge (github-web-flow)", policy.digest
            )
        missing = sorted(required - signer.roles)
        if missing:
            return fail(
                f"key not allowed for this path: needs role {', '.join(missing)}; "
                f"{signer.name} has {', '.join(sorted(signer.roles)) or 'no role'}",
                signer.name,
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
                raise UnknownKeyError(self._unknown(state, lambda p: p.signer_for_ssh(key), key))
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
                            "forge-made commit: the policy accepts the forge key for merges only"
                        ) from None
                removed = self._removed_openpgp(state, signature, signed.payload)
                raise UnknownKeyError(removed or f"unknown key: {unknown.message}") from None
            found = policy.signer_for_openpgp(pgp_key)
            if found is None:  # pragma: no cover - the keyring holds only policy keys
                raise UnknownKeyError(f"unknown key {pgp_key.fingerprint}")
            return found
        raise UnsupportedSignatureError(
            "unsupported signature type (only SSH and OpenPGP signatures are verified)"
        )

    def _unknown(
        self, state: PolicyState, lookup: Callable[[Policy], Signer | None], key: SshPublicKey
    ) -> str:
        current: PolicyState | None = state
        while current is not None and current.previous is not None:
            if lookup(current.previous.policy) is not None and lookup(current.policy) is None:
                return f"key {key.fingerprint} removed by commit {current.introduced_by}"[:200]
            current = current.previous
        return f"unknown key {key.fingerprint}"

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

    def check_tag(self, tag: str) -> Verdict:
        """A signed annotated tag, judged under the base policy."""
        oid = self.repo.resolve(tag, "tag")
        _, raw = self.repo.reader.read(oid)
        signed = split_tag(raw)
        subject = f"tag {tag}"
        tagger = next(
            (line[7:].decode(errors="replace").rsplit(" ", 2)[0]
             for line in raw.split(b"\n") if line.startswith(b"tagger ")),
            "",
        )  # fmt: skip
        return self._judge(oid, tagger, subject, signed, self.base, {"developer"}, False)


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
