"""The workspace cannot fool `tree` and `watch`: submodules, special files, ignored files, odd
names, hard links and renames, each against real git repositories and real inotify."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import zlib
from pathlib import Path

import pytest

from integrity.errors import InputError
from integrity.watch import _Watcher
from tests.components.cli import sealgate
from tests.components.gitrepo import Repo, make_repo
from tests.components.hsm import HsmFixture

LIB_C = "int lib(void) { return 1; }\n"
EVIL_C = "int lib(void) { return 6; }\n"  # the same size as LIB_C
FILE_ALLOW = ("-c", "protocol.file.allow=always")


def _repo(home: Path) -> Repo:
    home.mkdir(parents=True, exist_ok=True)
    repo = make_repo(home)
    repo.write("src/main.c", "int main(void) { return 0; }\n")
    repo.write("README.md", "demo\n")
    repo.write(".gitignore", "__pycache__/\n*.pyc\n/dist/\n.cache/\n")
    repo.write("app/__init__.py", "VERSION = 1\n")
    repo.commit_ssh(None, "sources")
    return repo


def _library(home: Path, name: str = "lib") -> Repo:
    """A repository to be used as a submodule."""
    home.mkdir(parents=True, exist_ok=True)
    library = make_repo(home)
    library.write(f"{name}.c", LIB_C)
    library.commit_ssh(None, f"{name} sources")
    return library


def _with_submodule(tmp_path: Path, *, nested: bool = False) -> Repo:
    """`repo` with the submodule `sub` (which, when `nested`, has its own submodule `inner`)."""
    library = _library(tmp_path / "lib")
    if nested:
        inner = _library(tmp_path / "inner", "inner")
        library.git(*FILE_ALLOW, "submodule", "add", "-q", str(inner.path), "inner")
        library.commit_ssh(None, "add inner")
    repo = _repo(tmp_path / "main")
    repo.git(*FILE_ALLOW, "submodule", "add", "-q", str(library.path), "sub")
    repo.git(*FILE_ALLOW, "submodule", "update", "-q", "--init", "--recursive")
    repo.commit_ssh(None, "add sub")
    return repo


def _tree(repo: Repo, *args: str) -> tuple[int, str]:
    result = sealgate("tree", "--repo", repo.path, *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, result.stdout


def _sub_git(repo: Repo, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo.path / "sub"), *args],
        env=repo.env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


# -- submodules are proven by their contents -------------------------------------------------


def test_honest_submodule_passes(tmp_path: Path) -> None:
    repo = _with_submodule(tmp_path, nested=True)
    code, out = _tree(repo)
    assert code == 0, out
    assert "work tree matches commit" in out
    assert _tree(repo, "--submodules", "prove")[0] == 0


def test_submodule_read_from_the_superprojects_modules_store(tmp_path: Path) -> None:
    """Without its `.git` file the submodule is proven from `.git/modules/sub`; pointed at
    another repository, that repository's objects are re-hashed and prove nothing false."""
    repo = _with_submodule(tmp_path)
    (repo.path / "sub/.git").unlink()
    code, out = _tree(repo)
    assert code == 0, out
    # another history (made in the same second, an identical library would be the same commit)
    other = _library(tmp_path / "other", "other")
    (repo.path / "sub/.git").write_text(f"gitdir: {other.path / '.git'}\n")
    code, out = _tree(repo)
    assert code == 1
    assert "submodule sub: not proven (commit " in out and "not in its repository)" in out


def test_edited_file_in_a_submodule_whose_head_is_unchanged(tmp_path: Path) -> None:
    """The old proof asked the submodule `rev-parse HEAD`: an uncommitted edit passed it."""
    repo = _with_submodule(tmp_path)
    (repo.path / "sub/lib.c").write_text(EVIL_C)
    code, out = _tree(repo)
    assert code == 1
    assert "modified sub/lib.c: content differs" in out


def test_submodule_head_forged_to_the_gitlink(tmp_path: Path) -> None:
    """The submodule checks out another commit, then its HEAD file is rewritten to say the
    gitlink's id: what the submodule says about itself proves nothing."""
    repo = _with_submodule(tmp_path)
    recorded = _sub_git(repo, "rev-parse", "HEAD")
    (repo.path / "sub/lib.c").write_text(EVIL_C)
    _sub_git(repo, "commit", "-qam", "evil")
    git_dir = Path(_sub_git(repo, "rev-parse", "--absolute-git-dir"))
    (git_dir / "HEAD").write_text(recorded + "\n")
    assert _sub_git(repo, "rev-parse", "HEAD") == recorded  # the submodule now lies
    code, out = _tree(repo)
    assert code == 1
    assert "modified sub/lib.c: content differs" in out


def test_forged_commit_object_in_the_submodule_store(tmp_path: Path) -> None:
    """The loose object stored under the gitlink's id is replaced by a commit of an evil tree
    whose files are checked out: the object is re-hashed, so it proves nothing."""
    repo = _with_submodule(tmp_path)
    (repo.path / "sub/lib.c").write_text(LIB_C + "/* v2 */\n")
    _sub_git(repo, "commit", "-qam", "v2")
    repo.commit_ssh(None, "sub v2")
    recorded = _sub_git(repo, "rev-parse", "HEAD")
    (repo.path / "sub/lib.c").write_text(EVIL_C)
    _sub_git(repo, "commit", "-qam", "evil")
    evil_tree = _sub_git(repo, "rev-parse", "HEAD^{tree}")
    forged = f"tree {evil_tree}\nauthor Dev <d@e> 1 +0000\ncommitter Dev <d@e> 1 +0000\n\nv2\n"
    git_dir = Path(_sub_git(repo, "rev-parse", "--absolute-git-dir"))
    loose = git_dir / "objects" / recorded[:2] / recorded[2:]
    assert loose.exists()
    loose.chmod(0o644)
    raw = forged.encode()
    loose.write_bytes(zlib.compress(b"commit %d\0" % len(raw) + raw))
    code, out = _tree(repo)
    assert code == 1
    assert (
        f"submodule sub: not proven (the object stored as commit {recorded} does not hash to "
        "that id)" in out
    )


def test_gitlink_to_a_commit_the_submodule_does_not_have(tmp_path: Path) -> None:
    repo = _with_submodule(tmp_path)
    missing = "1234567890abcdef1234567890abcdef12345678"
    repo.git("update-index", "--cacheinfo", f"160000,{missing},sub")
    repo.git("commit", "-q", "-m", "point sub at a commit nobody has")
    code, out = _tree(repo)
    assert code == 1
    assert f"submodule sub: not proven (commit {missing} not in its repository)" in out


def test_submodule_not_checked_out(tmp_path: Path) -> None:
    repo = _with_submodule(tmp_path)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo.path), str(clone)], env=repo.env, check=True)
    assert (clone / "sub").is_dir() and not any((clone / "sub").iterdir())
    result = sealgate("tree", "--repo", clone)
    assert result.returncode == 1
    assert "submodule sub: not checked out" in result.stdout


def test_submodules_refuse(tmp_path: Path) -> None:
    repo = _with_submodule(tmp_path)
    code, out = _tree(repo, "--submodules", "refuse")
    assert code == 1
    assert "submodule sub: not proven (submodules are refused)" in out
    report = json.loads(sealgate("tree", "--repo", repo.path, "--submodules", "refuse",
                                 "--json").stdout)  # fmt: skip
    assert report["code"] == "tree-mismatch"
    assert [d["code"] for d in report["differences"]] == ["tree-submodule"]
    bad = sealgate("tree", "--repo", repo.path, "--submodules", "trust")
    assert bad.returncode == 2 and "invalid choice: 'trust'" in bad.stderr


def test_nested_submodule_differences_name_the_full_path(tmp_path: Path) -> None:
    repo = _with_submodule(tmp_path, nested=True)
    (repo.path / "sub/inner/inner.c").write_text(EVIL_C)
    (repo.path / "sub/inner/extra.c").write_text("int extra;\n")
    code, out = _tree(repo)
    assert code == 1
    assert "modified sub/inner/inner.c: content differs" in out
    assert "added sub/inner/extra.c: untracked and not ignored" in out


def test_submodule_replaced_by_a_symlink(tmp_path: Path) -> None:
    repo = _with_submodule(tmp_path)
    copy = tmp_path / "copy"
    (repo.path / "sub").rename(copy)
    os.symlink(copy, repo.path / "sub")
    code, out = _tree(repo)
    assert code == 1
    assert "type sub: submodule in the commit, not here" in out


# -- everything in the work tree counts ------------------------------------------------------


def test_untracked_fifo_is_reported_and_never_opened(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    os.mkfifo(repo.path / "src/pipe")
    (repo.path / "dist").mkdir()
    os.mkfifo(repo.path / "dist/pipe")  # ignored by the commit's .gitignore: still reported
    code, out = _tree(repo)  # a FIFO opened for reading would hang here
    assert code == 1
    assert "added src/pipe: FIFO, untracked and not ignored" in out
    assert "added dist/pipe: FIFO, ignored by .gitignore, present before the build" in out


def test_fifo_at_a_tracked_path(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo.path / "src/main.c").unlink()
    os.mkfifo(repo.path / "src/main.c")
    code, out = _tree(repo)
    assert code == 1
    assert "type src/main.c: a FIFO here, not in the commit" in out


def test_untracked_socket_and_device_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _repo(tmp_path)
    monkeypatch.chdir(repo.path)  # a relative bind: socket paths are limited to 108 bytes
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind("app/control.sock")
        os.mknod(repo.path / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        code, out = _tree(repo)
    finally:
        server.close()
    assert code == 1
    assert "added app/control.sock: socket, untracked and not ignored" in out
    assert "added null: character device, untracked and not ignored" in out


def test_stale_ignored_pyc_present_before_the_build(tmp_path: Path) -> None:
    """Python runs `__pycache__/x.pyc` instead of its source when the pyc looks fresh."""
    repo = _repo(tmp_path)
    repo.write("app/__pycache__/__init__.cpython-311.pyc", "compiled backdoor")
    code, out = _tree(repo)
    assert code == 1
    assert (
        "added app/__pycache__/__init__.cpython-311.pyc: ignored by .gitignore, present before "
        "the build" in out
    )
    # declared (a cache the build is allowed to find): the honest path stays easy
    assert _tree(repo, "--allow-untracked", "__pycache__/")[0] == 0


def test_untracked_nested_repository_is_reported(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    subprocess.run(["git", "init", "-q", str(repo.path / "src/vendor")], check=True)
    (repo.path / "src/vendor/evil.c").write_text("int evil;\n")
    (repo.path / "app/.git").write_text("gitdir: /nowhere\n")  # a `.git` file is no shield
    code, out = _tree(repo)
    assert code == 1
    assert "added src/vendor/.git: untracked nested repository" in out
    assert "added src/vendor/evil.c: untracked and not ignored" in out
    assert "added app/.git: untracked and not ignored" in out


def test_symlinked_directory_is_not_followed(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    copy = tmp_path / "copy"
    (repo.path / "src").rename(copy)
    (copy / "main.c").write_text("int main(void) { evil(); }\n")
    os.symlink(copy, repo.path / "src")
    code, out = _tree(repo)
    assert code == 1
    assert "deleted src/main.c: tracked path is missing" in out
    assert "added src: untracked and not ignored" in out


def test_file_names_with_newlines_control_bytes_and_invalid_utf8(tmp_path: Path) -> None:
    """A name cannot forge a report line, hide a change or crash the proof."""
    repo = _repo(tmp_path)
    weird = os.fsencode(repo.path / "src") + b"/\xff\x01odd.c"
    with open(weird, "wb") as stream:
        stream.write(b"int odd;\n")
    repo.commit_ssh(None, "a file with an odd name")
    with open(weird, "wb") as stream:
        stream.write(b"int ODD;\n")
    forged = "x\nwork tree matches commit 000000000000"
    (repo.path / forged).write_text("hidden\n")
    code, out = _tree(repo)
    assert code == 1
    lines = out.splitlines()
    assert 'modified "src/\\xff\\x01odd.c": content differs' in lines
    assert 'added "x\\nwork tree matches commit 000000000000": untracked and not ignored' in lines
    assert not any(line.startswith("work tree matches") for line in lines)
    result = sealgate("tree", "--repo", repo.path, "--json")
    assert result.returncode == 1
    paths = {d["path"] for d in json.loads(result.stdout)["differences"]}
    assert forged in paths and len(paths) == 2


def _crafted_commit(repo: Repo, entries: list[tuple[str, str, str]]) -> str:
    """A commit whose root tree holds `entries` (mode, name, object) as given, names unchecked."""
    body = b"".join(
        mode.encode() + b" " + name.encode() + b"\0" + bytes.fromhex(oid)
        for mode, name, oid in entries
    )
    tree = subprocess.run(
        ["git", "-C", str(repo.path), "hash-object", "-t", "tree", "-w", "--literally", "--stdin"],
        input=body, env=repo.env, check=True, capture_output=True,
    ).stdout.decode().strip()  # fmt: skip
    return repo.git("commit-tree", tree, "-m", "crafted")


def test_dot_dot_and_dot_git_in_a_crafted_tree(tmp_path: Path) -> None:
    """Git refuses to check these out; the proof names them and never reads outside the tree."""
    repo = _repo(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("secret\n")
    blob = repo.git("hash-object", "-w", str(outside))
    readme = repo.git("rev-parse", "HEAD:README.md")
    gitlink = repo.git("rev-parse", "HEAD")
    commit = _crafted_commit(
        repo,
        [("100644", "..", blob), ("100644", ".git", blob), ("100644", "README.md", readme),
         ("160000", "...", gitlink)],
    )  # fmt: skip
    for path in ("src/main.c", ".gitignore", "app/__init__.py"):
        (repo.path / path).unlink()
    code, out = _tree(repo, "--commit", commit)
    assert code == 1
    assert "invalid ..: path in the commit cannot be checked out" in out
    assert "invalid .git: path in the commit cannot be checked out" in out
    assert "submodule ...: not checked out" in out


# -- the declared build outputs and caches: sealgate.yml ------------------------------------


def test_declared_outputs_and_caches_from_sealgate_yml(tmp_path: Path, hsm: HsmFixture) -> None:
    """A restored cache (ignored, present before the build) and the build's outputs pass when
    sealgate.yml declares them, and the same cache fails the tree stage when it does not."""
    repo = _repo(tmp_path)
    repo.write(".cache/pip/wheel.whl", "restored from the CI cache")
    build = "mkdir -p dist && cp src/main.c dist/app.bin && echo more >> .cache/pip/wheel.whl"
    common: list[str | Path] = ["run", "--repo", repo.path, "--no-commits", "--no-verify", "--no-attest",
              "--key", hsm.uri("ec256"), "--chain", hsm.chain_pem]  # fmt: skip

    undeclared = sealgate(*common, "--report", tmp_path / "r1.json", env={
        **hsm.env, "SEALGATE_BUILD_COMMAND": build, "SEALGATE_ARTIFACTS": "dist/*"})  # fmt: skip
    assert undeclared.returncode == 1, undeclared.stdout + undeclared.stderr
    assert (
        "tree: added .cache/pip/wheel.whl: ignored by .gitignore, present before the build"
        in undeclared.stdout
    )
    assert not (repo.path / "dist").exists()  # stopped before the build

    repo.write("sealgate.yml", "outputs: [dist/]\ncaches: [.cache/]\n")
    repo.commit_ssh(None, "declare outputs and caches")
    declared = sealgate(*common, "--report", tmp_path / "r2.json", env={
        **hsm.env, "SEALGATE_BUILD_COMMAND": build, "SEALGATE_ARTIFACTS": "dist/*"})  # fmt: skip
    assert declared.returncode == 0, declared.stdout + declared.stderr
    assert (repo.path / "dist/app.bin.p7s").exists()


def test_file_name_cannot_inject_a_workflow_command(tmp_path: Path, hsm: HsmFixture) -> None:
    """The action prints `::error file=PATH,...`: a newline in PATH would start a new command."""
    repo = _repo(tmp_path)
    (repo.path / "x\n::add-mask::hidden").write_text("untracked\n")
    report = tmp_path / "report.json"
    result = sealgate(
        "run", "--repo", repo.path, "--no-commits", "--no-verify", "--no-attest", "--report",
        report, "--key", hsm.uri("ec256"), "--artifacts", "README.md", env=hsm.env,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    stages = {stage["name"]: stage for stage in json.loads(report.read_text())["stages"]}
    files = [a["file"] for a in stages["tree"]["annotations"]]
    assert files == ['"x\\n::add-mask::hidden"']
    assert 'tree: added "x\\n::add-mask::hidden": untracked and not ignored' in result.stdout


# -- watch: hard links, renames, attributes, short-lived paths -------------------------------


def _script(tmp_path: Path, body: str) -> Path:
    """A build script kept outside the repository, so it is not an untracked file in it."""
    script = tmp_path / "build.sh"
    script.write_text("set -e\n" + body)
    return script


def _watch(repo: Repo, script: Path, *extra: str) -> tuple[int, str]:
    result = sealgate("watch", "--repo", repo.path, "--outputs", "build/", *extra, "--", "sh",
                      script)  # fmt: skip
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.returncode, result.stdout


def test_honest_build_control(tmp_path: Path) -> None:
    repo = _with_submodule(tmp_path / "w", nested=True)
    code, out = _watch(repo, _script(tmp_path, "mkdir -p build\ncat src/main.c sub/lib.c > "
                                              "build/out\n"))  # fmt: skip
    assert code == 0, out
    assert "build succeeded; 0 violations during the build; tree matches" in out


def test_tracked_file_with_a_hard_link_refuses_the_build(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "w")
    os.link(repo.path / "src/main.c", tmp_path / "other-name.c")
    marker = tmp_path / "build-ran"
    code, out = _watch(repo, _script(tmp_path, f"touch {marker}\n"))
    assert code == 1
    assert (
        "TAMPERED src/main.c: hard-link at " in out
        and "(has 2 hard links; a write through another link would not be seen)" in out
    )
    assert "build NOT RUN" in out and not marker.exists()
    result = sealgate("watch", "--repo", repo.path, "--json", "--", "sh",
                      _script(tmp_path, f"touch {marker}\n"))  # fmt: skip
    report = json.loads(result.stdout)
    assert (result.returncode, report["code"]) == (1, "hard-link")
    assert [v["code"] for v in report["violations"]] == ["hard-link"]
    assert not marker.exists()


def test_write_through_a_hard_link_made_during_the_build(tmp_path: Path) -> None:
    """SUNSPOT through another path: link the source elsewhere, write and restore it there,
    drop the link. No event reaches the source's directory; its inode sees every step."""
    repo = _repo(tmp_path / "w")
    elsewhere = tmp_path / "elsewhere.c"
    backup = tmp_path / "backup.c"
    code, out = _watch(repo, _script(tmp_path, (
        f"ln src/main.c {elsewhere}\ncp -p {elsewhere} {backup}\n"
        f"printf 'int main(void) {{ evil(); }}\\n' > {elsewhere}\n"
        f"cat {backup} > {elsewhere}\ntouch -r {backup} {elsewhere}\nrm {elsewhere}\n"
    )))  # fmt: skip
    assert code == 1
    assert "TAMPERED src/main.c: modify at " in out
    assert "TAMPERED src/main.c: hard-link at " in out
    assert "tree matches" in out  # restored: only the watch can tell


def test_work_tree_renamed_away_and_back(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "w")
    away = tmp_path / "away"
    code, out = _watch(repo, _script(tmp_path, f"mv {repo.path} {away}\nmv {away} {repo.path}\n"))
    assert code == 1
    assert "TAMPERED .: move-self at " in out and "the work tree itself was removed or moved" in out


def test_parent_of_the_work_tree_renamed_away_and_back(tmp_path: Path) -> None:
    """The build sees a copy at the same absolute path while the real tree is elsewhere."""
    parent = tmp_path / "w"
    repo = _repo(parent)
    away = tmp_path / "away"
    code, out = _watch(repo, _script(tmp_path, (
        f"mv {parent} {away}\nmkdir -p {repo.path}/src\ncp {away}/repo/src/main.c {repo.path}/src\n"
        f"rm -rf {parent}\nmv {away} {parent}\n"
    )))  # fmt: skip
    assert code == 1
    assert f"TAMPERED {parent}: move-self at " in out
    assert "a parent directory of the work tree was moved or removed during build" in out


def test_tracked_directory_renamed_away_and_back(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "w")
    code, out = _watch(repo, _script(tmp_path, "mv src src.away\nmv src.away src\n"))
    assert code == 1
    assert "TAMPERED src: moved-from at " in out and "TAMPERED src: moved-to at " in out
    assert "tree matches" in out


def test_tracked_directory_replaced_by_a_symlink_to_a_copy(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "w")
    original, copy = tmp_path / "original", tmp_path / "copy"
    code, out = _watch(repo, _script(tmp_path, (
        f"mv src {original}\ncp -rp {original} {copy}\n"
        f"printf 'int main(void) {{ evil(); }}\\n' > {copy}/main.c\nln -s {copy} src\n"
        f"mkdir -p build\ncat src/main.c > build/out\nrm src\nmv {original} src\n"
    )))  # fmt: skip
    assert code == 1
    assert "TAMPERED src: moved-from at " in out and "TAMPERED src: create at " in out
    assert "tree matches" in out


def test_tracked_file_made_executable_and_back(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "w")
    code, out = _watch(repo, _script(tmp_path, "chmod +x src/main.c\nchmod -x src/main.c\n"))
    assert code == 1
    assert "TAMPERED src/main.c: attrib at " in out
    assert "tree matches" in out


def test_file_created_and_deleted_in_a_new_directory(tmp_path: Path) -> None:
    """Faster than the watch on the new directory can be added: the directory still counts."""
    repo = _repo(tmp_path / "w")
    code, out = _watch(repo, _script(tmp_path, (
        "mkdir gen src/gen\n: > gen/x.c\n: > src/gen/y.c\nrm -r gen src/gen\n"
    )))  # fmt: skip
    assert code == 1
    assert "TAMPERED gen: create at " in out and "TAMPERED src/gen: create at " in out
    assert "tree matches" in out


def test_same_size_overwrite_in_place_and_restore(tmp_path: Path) -> None:
    """Same size, same mtime afterwards: a size check while hashing cannot see it, the watch can."""
    repo = _with_submodule(tmp_path / "w")
    backup = tmp_path / "backup.c"
    code, out = _watch(repo, _script(tmp_path, (
        f"cp -p sub/lib.c {backup}\n"
        f"printf '{EVIL_C.strip()}\\n' | dd of=sub/lib.c conv=notrunc status=none\n"
        f"cat {backup} | dd of=sub/lib.c conv=notrunc status=none\ntouch -r {backup} sub/lib.c\n"
    )))  # fmt: skip
    assert code == 1
    assert "TAMPERED sub/lib.c: modify at " in out  # a submodule file is watched too
    assert "tree matches" in out


def test_running_out_of_watches_fails_closed(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "w")
    watcher = _Watcher(repo.path, ["src/main.c"], [])

    def exhausted(path: object, mask: int) -> int:
        raise OSError(28, "No space left on device")  # ENOSPC: max_user_watches reached

    try:
        watcher.inotify.add_watch = exhausted
        with pytest.raises(InputError, match="inotify watch limit reached") as caught:
            watcher.watch_files()
    finally:
        watcher.close()
    assert caught.value.hint == "raise fs.inotify.max_user_watches"


# -- the repository's config cannot move the work tree ----------------------------------------


def test_core_worktree_cannot_aim_the_proof_at_a_clean_copy(tmp_path: Path) -> None:
    """`core.worktree` (which `git -c` cannot unset) pointing at a pristine copy while the
    real work tree holds injected code: refused, for `tree` and `watch` alike."""
    repo = _repo(tmp_path / "main")
    clean = tmp_path / "clean"
    subprocess.run(["cp", "-a", str(repo.path), str(clean)], check=True)
    subprocess.run(["rm", "-rf", str(clean / ".git")], check=True)
    repo.write("src/main.c", "int main(void) { return 66; }\n")  # injected, never committed
    assert _tree(repo)[0] == 1  # control: the proof sees the injection
    repo.git("config", "core.worktree", str(clean))
    for command in (("tree",), ("watch", "--", "true")):
        result = sealgate(*command[:1], "--repo", repo.path, *command[1:])
        assert result.returncode == 2, result.stdout + result.stderr
        assert "but its .git is not there (core.worktree or a .git file moves it)" in (
            result.stderr
        )
        assert "[worktree-redirected]" in result.stderr


# -- patterns that do not compile: a committed .gitignore, declared globs ---------------------


def test_a_gitignore_line_that_is_no_pattern_cannot_stop_or_blind_the_proof(
    tmp_path: Path,
) -> None:
    """A committed `.gitignore` ending a line in a lone backslash was a traceback (exit 1, as
    if verification had failed). Git ignores such a line; so does the proof, which still names
    every extra file and still explains the valid lines."""
    repo = _repo(tmp_path / "w")
    repo.write(".gitignore", "*.pyc\nweird\\\n")
    repo.commit_ssh(None, "a .gitignore with a line that is no pattern")
    assert _tree(repo)[0] == 0  # control: nothing extra, the proof passes
    (repo.path / "weird\\").write_text("x")
    (repo.path / "stale.pyc").write_bytes(b"x")
    code, out = _tree(repo)
    assert code == 1
    assert 'added "weird\\\\": untracked and not ignored' in out
    assert "added stale.pyc: ignored by .gitignore, present before the build" in out


@pytest.mark.parametrize(
    ("command", "flag"),
    [("tree", "--allow-untracked"), ("watch", "--outputs"), ("rebuild", "--artifacts")],
)
def test_a_declared_glob_that_does_not_compile_is_bad_glob(
    tmp_path: Path, command: str, flag: str
) -> None:
    repo = _repo(tmp_path / "w")
    extra = {"watch": ["--", "true"], "rebuild": ["--command", "true"]}.get(command, [])
    result = sealgate(command, "--repo", repo.path, flag, "src\\", *extra)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "[bad-glob]" in result.stderr and "'src\\\\'" in result.stderr
    assert flag in result.stderr
