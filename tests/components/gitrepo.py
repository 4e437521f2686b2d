"""Repositories built at test time with real git, signed with real ssh-keygen and gpg keys."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.components import require


@dataclass
class SshUser:
    name: str
    key: Path

    @property
    def public_line(self) -> str:
        return self.key.with_suffix(".pub").read_text().strip()


def ssh_user(home: Path, name: str, key_type: str = "ed25519") -> SshUser:
    require(shutil.which("ssh-keygen") is not None, "ssh-keygen")
    key = home / f"{name}_{key_type}"
    bits = {"ecdsa": ["-b", "256"], "rsa": ["-b", "3072"]}.get(key_type, [])
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, *bits, "-N", "", "-C", name, "-f", str(key)],
        check=True,
    )
    return SshUser(name, key)


@dataclass
class GpgUser:
    name: str
    fingerprint: str
    armored: str


@dataclass
class Repo:
    """A repository and the environment its commits are made in."""

    path: Path
    gnupghome: Path
    env: dict[str, str] = field(default_factory=dict)

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            ["git", "-C", str(self.path), *args],
            env={**self.env, **(env or {})}, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)}: {result.stderr}")
        return result.stdout.strip()

    def write(self, relative: str, text: str) -> None:
        path = self.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def commit_ssh(self, user: SshUser | None, message: str, **env: str) -> str:
        """Commit everything, signed with `user`'s SSH key (None: unsigned)."""
        self.git("add", "-A")
        sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={user.key}"] if user else []
        self.git(*sign, "commit", "-q", "--allow-empty", *(["-S"] if user else []), "-m", message,
                 env=env)  # fmt: skip
        return self.git("rev-parse", "HEAD")

    def commit_gpg(self, user: GpgUser, message: str) -> str:
        self.git("add", "-A")
        self.git("-c", "gpg.format=openpgp", "-c", f"user.signingkey={user.fingerprint}",
                 "commit", "-q", "--allow-empty", "-S", "-m", message)  # fmt: skip
        return self.git("rev-parse", "HEAD")


def make_repo(home: Path) -> Repo:
    require(shutil.which("git") is not None, "git")
    path = home / "repo"
    gnupghome = home / "gnupg"
    gnupghome.mkdir(mode=0o700)
    env = {
        **os.environ,
        "GNUPGHOME": str(gnupghome),
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Dev",
        "GIT_AUTHOR_EMAIL": "dev@example.com",
        "GIT_COMMITTER_NAME": "Dev",
        "GIT_COMMITTER_EMAIL": "dev@example.com",
    }
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=env)
    return Repo(path, gnupghome, env)


def gpg_user(repo: Repo, name: str) -> GpgUser:
    require(shutil.which("gpg") is not None, "gpg")
    uid = f"{name} <{name.lower()}@example.com>"
    env = {**os.environ, "GNUPGHOME": str(repo.gnupghome)}
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "1y"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-keys", uid],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
    )
    armored = subprocess.run(
        ["gpg", "--batch", "--armor", "--export", fingerprint],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return GpgUser(name, fingerprint, armored)
