"""In-process OpenPGP checks against signatures made by the real gpg and git."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pysequoia
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrity.errors import (
    InputError,
    SignatureError,
    UnknownKeyError,
    UnsupportedSignatureError,
)
from integrity.openpgp import (
    OpenPgpKey,
    OpenPgpKeyring,
    load_openpgp_key,
    load_openpgp_keys,
    parse_sequoia_policy,
    read_signature_packet,
)

T0 = "20200101T000000"


@dataclass(frozen=True)
class Signed:
    """A detached signature as git stores it, and the exact bytes it covers."""

    signature: bytes
    payload: bytes


@dataclass(frozen=True)
class World:
    alice: OpenPgpKey
    alice_fpr: str
    alice_secret: str
    rsa: OpenPgpKey
    sam: OpenPgpKey
    bob: OpenPgpKey
    alice_commit: Signed
    rsa_commit: Signed
    sam_commit: Signed
    revoked: OpenPgpKey
    revoked_commit: Signed
    expiring: OpenPgpKey
    signed_while_valid: Signed
    signed_after_expiry: Signed


def _gpg(home: Path, *args: str, faked: str | None = None) -> str:
    cmd = ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
    if faked:
        cmd += ["--faked-system-time", faked]
    done = subprocess.run(
        [*cmd, *args],
        env={**os.environ, "GNUPGHOME": str(home)},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def _new_key(
    home: Path, uid: str, algo: str, usage: str, expire: str, faked: str | None = None
) -> str:
    _gpg(home, "--quick-gen-key", uid, algo, usage, expire, faked=faked)
    email = uid.split("<")[1].rstrip(">")
    listing = _gpg(home, "--with-colons", "--list-keys", f"<{email}>")
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def _public(home: Path, fpr: str) -> str:
    return _gpg(home, "--armor", "--export", fpr)


def split_gpgsig(raw: bytes) -> Signed:
    """git's rule: drop the `gpgsig` header and its space-indented continuation lines."""
    head, sep, message = raw.partition(b"\n\n")
    payload_lines: list[bytes] = []
    sig_lines: list[bytes] = []
    in_sig = False
    for line in head.split(b"\n"):
        if line.startswith(b"gpgsig "):
            in_sig = True
            sig_lines.append(line[len(b"gpgsig ") :])
        elif in_sig and line.startswith(b" "):
            sig_lines.append(line[1:])
        else:
            in_sig = False
            payload_lines.append(line)
    assert sig_lines, "commit is not signed"
    return Signed(b"\n".join(sig_lines) + b"\n", b"\n".join(payload_lines) + sep + message)


def _signed_commit(home: Path, repo: Path, fpr: str, name: str, email: str) -> Signed:
    env = {**os.environ, "GNUPGHOME": str(home)}
    if not (repo / ".git").exists():
        subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    subprocess.run(
        [
            "git",
            "-c",
            "gpg.program=gpg",
            "-c",
            f"user.signingkey={fpr}",
            "-c",
            f"user.name={name}",
            "-c",
            f"user.email={email}",
            "commit",
            "-q",
            "-S",
            "--allow-empty",
            "-m",
            f"msg by {name}",
        ],
        cwd=repo,
        env=env,
        check=True,
    )
    raw = subprocess.run(
        ["git", "cat-file", "commit", "HEAD"], cwd=repo, env=env, capture_output=True, check=True
    ).stdout
    return split_gpgsig(raw)


def _detached(home: Path, fpr: str, payload: bytes, when: str, tmp: Path) -> Signed:
    data = tmp / f"payload-{when}"
    data.write_bytes(payload)
    out = tmp / f"payload-{when}.asc"
    _gpg(
        home, "--local-user", fpr, "--armor", "--detach-sign", "-o", str(out), str(data), faked=when
    )
    return Signed(out.read_bytes(), payload)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One GNUPGHOME with every key the tests need, and real signed commits."""
    base = tmp_path_factory.mktemp("openpgp")
    home = base / "gnupg"
    home.mkdir(mode=0o700)
    repo = base / "repo"
    try:
        alice = _new_key(home, "Alice <alice@example.com>", "ed25519", "sign", "1d")
        rsa = _new_key(home, "Rita <rita@example.com>", "rsa3072", "sign", "1d")
        sam = _new_key(home, "Sam <sam@example.com>", "ed25519", "cert", "1d")
        _gpg(home, "--quick-add-key", sam, "ed25519", "sign", "1d")
        bob = _new_key(home, "Bob <bob@example.com>", "ed25519", "sign", "1d")
        revoked = _new_key(home, "Rev <rev@example.com>", "ed25519", "sign", "1d")
        expiring = _new_key(home, "Old <old@example.com>", "ed25519", "sign", "never", faked=T0)

        alice_commit = _signed_commit(home, repo, alice, "Alice", "alice@example.com")
        rsa_commit = _signed_commit(home, repo, rsa, "Rita", "rita@example.com")
        sam_commit = _signed_commit(home, repo, sam, "Sam", "sam@example.com")
        revoked_commit = _signed_commit(home, repo, revoked, "Rev", "rev@example.com")
        # The pre-made revocation certificate is guarded by a leading ':' against import.
        rev_cert = (home / "openpgp-revocs.d" / f"{revoked}.rev").read_text()
        rev_file = base / "rev.asc"
        rev_file.write_text(rev_cert.replace(":-----BEGIN", "-----BEGIN"))
        _gpg(home, "--import", str(rev_file))

        # Old's key never expired when first made; 5 minutes later it is set to expire in a day.
        while_valid = _detached(home, expiring, b"old payload\n", "20200101T010000", base)
        after_expiry = _detached(home, expiring, b"old payload\n", "20200110T000000", base)
        _gpg(home, "--quick-set-expire", expiring, "1d", faked="20200101T000500")

        yield World(
            alice=load_openpgp_key(_public(home, alice), where="alice.asc"),
            alice_fpr=alice,
            alice_secret=_gpg(home, "--armor", "--export-secret-keys", alice),
            rsa=load_openpgp_key(_public(home, rsa), where="rita.asc"),
            sam=load_openpgp_key(_public(home, sam), where="sam.asc"),
            bob=load_openpgp_key(_public(home, bob), where="bob.asc"),
            alice_commit=alice_commit,
            rsa_commit=rsa_commit,
            sam_commit=sam_commit,
            revoked=load_openpgp_key(_public(home, revoked), where="rev.asc"),
            revoked_commit=revoked_commit,
            expiring=load_openpgp_key(_public(home, expiring), where="old.asc"),
            signed_while_valid=while_valid,
            signed_after_expiry=after_expiry,
        )
    finally:
        subprocess.run(
            ["gpgconf", "--kill", "gpg-agent"],
            env={**os.environ, "GNUPGHOME": str(home)},
            check=False,
        )


# --- keys --------------------------------------------------------------------------------


def test_load_key_reads_fingerprint_and_user_ids(world: World) -> None:
    assert world.alice.fingerprint == world.alice_fpr.upper()
    assert world.alice.user_ids == ("Alice <alice@example.com>",)
    assert "BEGIN PGP PUBLIC KEY BLOCK" in world.alice.armored
    again = load_openpgp_key(world.alice.armored.encode(), where="bytes")
    assert again == world.alice


def test_load_key_lists_subkeys(world: World) -> None:
    assert len(world.sam.subkey_fingerprints) == 1
    assert world.sam.subkey_fingerprints[0] != world.sam.fingerprint


def test_load_key_refuses_secret_key(world: World) -> None:
    with pytest.raises(InputError, match="is a secret key; give the public key") as caught:
        load_openpgp_key(world.alice_secret, where="alice.sec")
    assert caught.value.code == "policy-invalid"


@pytest.mark.parametrize(
    "text",
    [
        "not a key",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n",
        "",
    ],
)
def test_load_key_rejects_garbage_naming_where(text: str) -> None:
    with pytest.raises(InputError, match=r"keys/x\.asc") as caught:
        load_openpgp_key(text, where="keys/x.asc")
    assert caught.value.code == "policy-invalid"


def test_load_key_wants_exactly_one(world: World) -> None:
    both = world.alice.armored + world.bob.armored
    assert [k.fingerprint for k in load_openpgp_keys(both, where="ring")] == [
        world.alice.fingerprint,
        world.bob.fingerprint,
    ]
    with pytest.raises(InputError, match="2 certificates"):
        load_openpgp_key(both, where="ring")


# --- verification ------------------------------------------------------------------------


def test_verifies_real_signed_commit(world: World) -> None:
    key = OpenPgpKeyring([world.alice]).verify(
        world.alice_commit.signature, world.alice_commit.payload
    )
    assert key.fingerprint == world.alice.fingerprint


def test_verifies_rsa_commit_among_several_keys(world: World) -> None:
    ring = OpenPgpKeyring([world.alice, world.rsa, world.bob])
    assert ring.verify(world.rsa_commit.signature, world.rsa_commit.payload) == world.rsa
    assert ring.verify(world.alice_commit.signature, world.alice_commit.payload) == world.alice


def test_subkey_signature_maps_to_primary(world: World) -> None:
    issuer = pysequoia.Sig.from_bytes(world.sam_commit.signature).issuer_fingerprint
    assert issuer is not None
    assert issuer.upper() == world.sam.subkey_fingerprints[0]
    key = OpenPgpKeyring([world.sam]).verify(world.sam_commit.signature, world.sam_commit.payload)
    assert key.fingerprint == world.sam.fingerprint


def test_unknown_issuer(world: World) -> None:
    with pytest.raises(UnknownKeyError, match=world.alice.fingerprint):
        OpenPgpKeyring([world.bob, world.rsa]).verify(
            world.alice_commit.signature, world.alice_commit.payload
        )
    with pytest.raises(UnknownKeyError):
        OpenPgpKeyring([]).verify(world.alice_commit.signature, world.alice_commit.payload)


def test_changed_payload_is_bad_signature(world: World) -> None:
    payload = bytearray(world.alice_commit.payload)
    payload[-2] ^= 0x01
    with pytest.raises(SignatureError) as caught:
        OpenPgpKeyring([world.alice]).verify(world.alice_commit.signature, bytes(payload))
    assert not isinstance(caught.value, UnknownKeyError)
    assert "Stack backtrace" not in caught.value.message


def test_signature_of_one_commit_does_not_fit_another(world: World) -> None:
    ring = OpenPgpKeyring([world.alice, world.rsa])
    with pytest.raises(SignatureError):
        ring.verify(world.alice_commit.signature, world.rsa_commit.payload)


def test_revoked_key_is_refused(world: World) -> None:
    with pytest.raises(SignatureError, match="does not verify") as caught:
        OpenPgpKeyring([world.revoked]).verify(
            world.revoked_commit.signature, world.revoked_commit.payload
        )
    assert caught.value.hint is not None and "revoked" in caught.value.hint


def test_expiry_is_judged_at_signature_time(world: World) -> None:
    ring = OpenPgpKeyring([world.expiring])
    made_in_time = world.signed_while_valid
    assert ring.verify(made_in_time.signature, made_in_time.payload) == world.expiring
    late = world.signed_after_expiry
    with pytest.raises(SignatureError) as caught:
        ring.verify(late.signature, late.payload)
    assert caught.value.hint is not None and "expired" in caught.value.hint


def test_duplicate_certificates_are_merged(world: World) -> None:
    ring = OpenPgpKeyring([world.alice, world.alice, world.bob])
    assert len(ring) == 2
    assert world.alice.fingerprint in ring
    key = ring.verify(world.alice_commit.signature, world.alice_commit.payload)
    assert key.fingerprint == world.alice.fingerprint


def test_foreign_signature_formats_are_unsupported(world: World) -> None:
    ring = OpenPgpKeyring([world.alice])
    ssh = b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n"
    with pytest.raises(UnsupportedSignatureError):
        ring.verify(ssh, world.alice_commit.payload)
    cms = b"-----BEGIN SIGNED MESSAGE-----\nMIAG\n-----END SIGNED MESSAGE-----\n"
    with pytest.raises(UnsupportedSignatureError):
        ring.verify(cms, world.alice_commit.payload)


@pytest.mark.parametrize(
    "signature",
    [b"", b"garbage", b"-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n"],
)
def test_garbage_signature(world: World, signature: bytes) -> None:
    with pytest.raises(SignatureError, match="malformed"):
        OpenPgpKeyring([world.alice]).verify(signature, world.alice_commit.payload)


def test_truncated_signature(world: World) -> None:
    ring = OpenPgpKeyring([world.alice])
    armored = world.alice_commit.signature
    binary = bytes(pysequoia.Sig.from_bytes(armored))
    for cut in (1, 10, len(binary) // 2, len(binary) - 1):
        with pytest.raises(SignatureError):
            ring.verify(binary[:cut], world.alice_commit.payload)
    with pytest.raises(SignatureError):
        ring.verify(armored[: len(armored) // 2], world.alice_commit.payload)


def test_public_key_is_not_a_signature(world: World) -> None:
    with pytest.raises(SignatureError, match="malformed"):
        OpenPgpKeyring([world.alice]).verify(world.alice.armored.encode(), b"x")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_corruptions_raise_only_signature_errors(world: World, data: st.DataObject) -> None:
    ring = OpenPgpKeyring([world.alice, world.sam])
    signed = data.draw(st.sampled_from([world.alice_commit, world.sam_commit]))
    source = data.draw(
        st.sampled_from([signed.signature, bytes(pysequoia.Sig.from_bytes(signed.signature))])
    )
    corrupted = bytearray(source)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(corrupted) - 1))
        corrupted[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(corrupted)))
    blob = bytes(corrupted[:cut]) + data.draw(st.binary(max_size=8))
    try:
        key = ring.verify(blob, signed.payload)
    except SignatureError:
        return
    # Only harmless edits (armor whitespace, trailing bytes) may still verify, as the signer.
    assert key in (world.alice, world.sam)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(max_size=300))
def test_random_bytes_raise_only_signature_errors(world: World, blob: bytes) -> None:
    with pytest.raises(SignatureError):
        OpenPgpKeyring([world.alice]).verify(blob, world.alice_commit.payload)


def test_many_verifications_are_fast(world: World) -> None:
    """Thousands of commits: the per-signature cost must stay far below a gpg process."""
    ring = OpenPgpKeyring([world.alice, world.rsa, world.sam, world.bob])
    commits = [world.alice_commit, world.rsa_commit, world.sam_commit] * 200
    start = time.perf_counter()
    for signed in commits:
        ring.verify(signed.signature, signed.payload)
    assert time.perf_counter() - start < 10.0


# --- sequoia-git policy ------------------------------------------------------------------


def _policy(world: World) -> str:
    return f'''version = 0
commit_goodlist = ["0123456789abcdef0123456789abcdef01234567"]

[authorization.alice]
sign_commit = true
sign_tag = true
audit = false
keyring = """
{world.alice.armored}"""

[authorization."release team"]
sign_commit = true
sign_tag = true
sign_archive = true
add_user = true
retire_user = true
audit = true
keyring = """
{world.rsa.armored}
{world.sam.armored}"""

[authorization.retired]
keyring = ""
'''


def test_parse_sequoia_policy(world: World) -> None:
    auths = {a.name: a for a in parse_sequoia_policy(_policy(world), source="openpgp-policy.toml")}
    assert set(auths) == {"alice", "release team", "retired"}
    assert auths["alice"].keys == (world.alice,)
    assert auths["alice"].rights == frozenset({"sign_commit", "sign_tag"})
    team = auths["release team"]
    assert [k.fingerprint for k in team.keys] == [world.rsa.fingerprint, world.sam.fingerprint]
    assert team.rights == frozenset(
        {"sign_commit", "sign_tag", "sign_archive", "add_user", "retire_user", "audit"}
    )
    assert auths["retired"].keys == ()
    assert auths["retired"].rights == frozenset()


def test_policy_keys_verify_commits(world: World) -> None:
    auths = parse_sequoia_policy(_policy(world), source="openpgp-policy.toml")
    committers = [k for a in auths if "sign_commit" in a.rights for k in a.keys]
    ring = OpenPgpKeyring(committers)
    assert ring.verify(world.sam_commit.signature, world.sam_commit.payload) == world.sam
    assert ring.verify(world.rsa_commit.signature, world.rsa_commit.payload) == world.rsa


def test_policy_bad_toml_names_source_and_line() -> None:
    with pytest.raises(InputError, match=r"policy\.toml.*line 2") as caught:
        parse_sequoia_policy("version = 0\n[authorization.x\n", source="policy.toml")
    assert caught.value.code == "policy-invalid"


def test_policy_bad_keyring_names_authorization() -> None:
    text = 'version = 0\n[authorization.mallory]\nsign_commit = true\nkeyring = "junk"\n'
    with pytest.raises(InputError, match=r"policy\.toml: authorization\.mallory\.keyring"):
        parse_sequoia_policy(text, source="policy.toml")


def test_policy_refuses_secret_key(world: World) -> None:
    text = f'version = 0\n[authorization.a]\nsign_commit = true\nkeyring = """\n{world.alice_secret}"""\n'
    with pytest.raises(InputError, match="secret key"):
        parse_sequoia_policy(text, source="policy.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = 1\n", "unsupported policy version"),
        ("commit_goodlist = []\n", "unsupported policy version"),
        ("version = 0\ncommit_goodlist = [1]\n", "commit_goodlist"),
        ("version = 0\n[authorization.a]\nsign_commits = true\n", "unknown key 'sign_commits'"),
        ('version = 0\n[authorization.a]\nsign_commit = "yes"\n', "true or false"),
        ("version = 0\nauthorization = 3\n", "table of tables"),
        ("version = 0\nextra = 1\n", "unknown top-level"),
    ],
)
def test_policy_shape_errors(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_sequoia_policy(text, source="policy.toml")


# --- GitHub's web-flow signatures and MPIs with leading zero bits ---------------------------

DATA = Path(__file__).parent.parent / "data" / "web-flow"
WEB_FLOW_2017 = "5DE3E0509C47EA3CF04A42D34AEE18F83AFDEB23"
WEB_FLOW_2024 = "968479A1AFF927E37D1A566BB5690EEEBB952194"
# commit id -> (the key that signed it, the RSA value's real bit count, the declared count)
WEB_FLOW_COMMITS = {
    "acabd8315e63bfcaac97d52d68a7a0b88d2eea93": (WEB_FLOW_2017, 2046, 2048),
    "8021a62ea0dfe0ed2e6107f5ccd37e0d4a92a996": (WEB_FLOW_2017, 2048, 2048),
    "be0d668e79594111bbeaed05a1ca47cd65c49cdc": (WEB_FLOW_2024, 4092, 4096),
    "1d0a15b371ab4d75bfbf681d1e6e1f92b4c56ee0": (WEB_FLOW_2024, 4095, 4096),
}


def packet_body(binary: bytes) -> bytes:
    """The body of a single new- or old-format packet with a definite length."""
    first = binary[0]
    if first & 0x40:
        octet = binary[1]
        if octet < 192:
            return binary[2 : 2 + octet]
        if octet < 224:
            return binary[3 : 3 + ((octet - 192) << 8) + binary[2] + 192]
        return binary[6 : 6 + int.from_bytes(binary[2:6], "big")]
    size = 1 << (first & 3)
    return binary[1 + size : 1 + size + int.from_bytes(binary[1 : 1 + size], "big")]


def new_packet(body: bytes, tag: int = 2) -> bytes:
    """A new-format packet with a five-octet length (always valid, never minimal)."""
    return bytes([0xC0 | tag, 0xFF]) + len(body).to_bytes(4, "big") + body


def mpi_offset(body: bytes) -> int:
    """Where a v4 signature's MPIs start: after both subpacket areas and the left-16 bits."""
    hashed = int.from_bytes(body[4:6], "big")
    unhashed = int.from_bytes(body[6 + hashed : 8 + hashed], "big")
    return 8 + hashed + unhashed + 2


def read_mpis(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos < len(data):
        bits = int.from_bytes(data[pos : pos + 2], "big")
        size = (bits + 7) // 8
        out.append((bits, data[pos + 2 : pos + 2 + size]))
        pos += 2 + size
    return out


def pad_mpis(binary: bytes, declared: list[int]) -> bytes:
    """Re-encode each MPI zero-padded to a declared bit count, as GitHub does."""
    body = packet_body(binary)
    at = mpi_offset(body)
    out = bytearray(body[:at])
    for (_bits, raw), bits in zip(read_mpis(body[at:]), declared, strict=True):
        value = int.from_bytes(raw, "big")
        assert value.bit_length() <= bits
        out += bits.to_bytes(2, "big") + value.to_bytes((bits + 7) // 8, "big")
    return new_packet(bytes(out))


def armor(binary: bytes) -> bytes:
    return pysequoia.armor(binary, pysequoia.ArmorKind.Signature).encode()


def gpg_verify(home: Path, signature: bytes, payload: bytes, tmp: Path) -> str:
    """GnuPG's verdict as its status lines: the independent cross-check."""
    sig_file, data_file = tmp / "cross.sig", tmp / "cross.data"
    sig_file.write_bytes(signature)
    data_file.write_bytes(payload)
    done = subprocess.run(
        ["gpg", "--batch", "--status-fd", "1", "--verify", str(sig_file), str(data_file)],
        env={**os.environ, "GNUPGHOME": str(home)}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.stdout


@pytest.fixture(scope="module")
def web_flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, OpenPgpKeyring]]:
    home = tmp_path_factory.mktemp("web-flow-gnupg")
    home.chmod(0o700)
    armored = (DATA / "github-web-flow.asc").read_bytes()
    subprocess.run(["gpg", "--batch", "--import"], input=armored, capture_output=True, check=True,
                   env={**os.environ, "GNUPGHOME": str(home)})  # fmt: skip
    try:
        yield home, OpenPgpKeyring(load_openpgp_keys(armored, where="github-web-flow.asc"))
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], check=False,
                       env={**os.environ, "GNUPGHOME": str(home)})  # fmt: skip


def test_web_flow_material_is_what_the_readme_says(web_flow: tuple[Path, OpenPgpKeyring]) -> None:
    _home, ring = web_flow
    assert {key.fingerprint for key in ring.keys} == {WEB_FLOW_2017, WEB_FLOW_2024}
    for oid in WEB_FLOW_COMMITS:
        raw = (DATA / f"{oid}.commit").read_bytes()
        assert hashlib.sha1(b"commit %d\0" % len(raw) + raw).hexdigest() == oid
        assert b"\ncommitter GitHub <noreply@github.com> " in raw


@pytest.mark.parametrize("oid", sorted(WEB_FLOW_COMMITS))
def test_real_web_flow_commits_verify_like_gnupg(
    oid: str, web_flow: tuple[Path, OpenPgpKeyring], tmp_path: Path
) -> None:
    """GitHub's own signatures, leading zero bits and all: GnuPG and Sealgate both accept them."""
    home, ring = web_flow
    fingerprint, real_bits, declared = WEB_FLOW_COMMITS[oid]
    signed = split_gpgsig((DATA / f"{oid}.commit").read_bytes())
    packet = read_signature_packet(signed.signature)
    assert (packet.version, packet.sig_type, packet.problem) == (4, 0x00, None)
    body = packet_body(armor_free(signed.signature))
    [(bits, raw)] = read_mpis(body[mpi_offset(body) :])
    assert (bits, int.from_bytes(raw, "big").bit_length()) == (declared, real_bits)
    if real_bits < declared:  # the bug: pysequoia alone refuses GitHub's encoding
        with pytest.raises(BaseException, match="Not a signature"):
            pysequoia.Sig.from_bytes(signed.signature)
    assert f"[GNUPG:] VALIDSIG {fingerprint} " in gpg_verify(
        home, signed.signature, signed.payload, tmp_path
    )
    assert ring.verify(signed.signature, signed.payload).fingerprint == fingerprint
    changed = signed.payload.replace(b"Merge", b"Merg3", 1).replace(b"bump", b"bunp", 1)
    assert changed != signed.payload
    with pytest.raises(SignatureError, match="does not verify") as caught:
        ring.verify(signed.signature, changed)
    assert not isinstance(caught.value, UnknownKeyError)
    assert "VALIDSIG" not in gpg_verify(home, signed.signature, changed, tmp_path)


def test_web_flow_signature_without_the_forge_key_is_an_unknown_key(world: World) -> None:
    """Unparseable by pysequoia, yet its issuer (a key ID: GitHub writes no fingerprint) is named."""
    signed = split_gpgsig((DATA / "be0d668e79594111bbeaed05a1ca47cd65c49cdc.commit").read_bytes())
    with pytest.raises(
        UnknownKeyError, match=f"signed by key ID {WEB_FLOW_2024[-16:]}, which is not an allowed"
    ):
        OpenPgpKeyring([world.alice, world.rsa]).verify(signed.signature, signed.payload)


def armor_free(signature: bytes) -> bytes:
    """The binary packet of an armored signature (our own walker's dearmoring is under test
    elsewhere, so this uses base64 directly)."""
    lines = signature.decode().strip().splitlines()
    body = [line for line in lines[1:-1] if line and ":" not in line and not line.startswith("=")]
    return base64.b64decode("".join(body))


def _rsa_signature_with_short_value(home: Path, fpr: str, payload: bytes, tmp: Path) -> Signed:
    """Sign until the RSA value has leading zero bits (each try has a chance of at least 1/2)."""
    for second in range(60):
        signed = _detached(home, fpr, payload, f"20250601T0000{second:02d}"[:15], tmp)
        body = packet_body(bytes(pysequoia.Sig.from_bytes(signed.signature)))
        [(bits, _raw)] = read_mpis(body[mpi_offset(body) :])
        if bits < 3072:
            return signed
        (tmp / f"payload-20250601T0000{second:02d}.asc").unlink()
    raise AssertionError("60 RSA signatures without a leading zero bit")


def test_v4_rsa_signature_padded_like_github_verifies(world: World, tmp_path: Path) -> None:
    """(a) A gpg signature made now, re-encoded with the key's full bit length declared."""
    home = tmp_path / "gnupg-rsa"
    home.mkdir(mode=0o700)
    payload = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nmessage\n"
    fpr = _new_key(
        home, "Pad <pad@example.com>", "rsa3072", "sign", "never", faked="20250101T000000"
    )
    try:
        ring = OpenPgpKeyring([load_openpgp_key(_public(home, fpr), where="pad.asc")])
        signed = _rsa_signature_with_short_value(home, fpr, payload, tmp_path)
        binary = bytes(pysequoia.Sig.from_bytes(signed.signature))
        for declared in (3072, 3072 + 8):  # GitHub's form, and one more whole zero byte
            padded = pad_mpis(binary, [declared])
            with pytest.raises(BaseException, match="Not a signature"):
                pysequoia.Sig.from_bytes(padded)
            for form in (padded, armor(padded)):
                assert ring.verify(form, payload).fingerprint == fpr.upper()
            assert f"VALIDSIG {fpr.upper()}" in gpg_verify(home, padded, payload, tmp_path)
            with pytest.raises(SignatureError, match="does not verify"):
                ring.verify(padded, payload + b"x")
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], check=False,
                       env={**os.environ, "GNUPGHOME": str(home)})  # fmt: skip


def test_v4_eddsa_signature_with_zero_padded_values_verifies(world: World, tmp_path: Path) -> None:
    """EdDSA's r and s are MPIs too: padded to 256 (and 264) bits they must still verify."""
    binary = bytes(pysequoia.Sig.from_bytes(world.alice_commit.signature))
    body = packet_body(binary)
    assert body[2] == 22  # EdDSA (legacy), two MPIs
    ring = OpenPgpKeyring([world.alice])
    for declared in ([256, 256], [264, 264]):
        padded = pad_mpis(binary, declared)
        if declared[0] == 264:  # a whole zero byte in front: pysequoia alone refuses it
            with pytest.raises(BaseException, match="Not a signature"):
                pysequoia.Sig.from_bytes(padded)
        assert ring.verify(padded, world.alice_commit.payload) == world.alice
        assert ring.verify(armor(padded), world.alice_commit.payload) == world.alice


def test_v4_ecdsa_signature_with_zero_padded_values_verifies(tmp_path: Path) -> None:
    """ECDSA (NIST P-256) r and s padded to 264 bits: Sealgate and GnuPG both accept them."""
    home = tmp_path / "gnupg-ecdsa"
    home.mkdir(mode=0o700)
    payload = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\necdsa\n"
    try:
        fpr = _new_key(
            home, "Ec <ec@example.com>", "nistp256", "sign", "never", faked="20250101T000000"
        )
        ring = OpenPgpKeyring([load_openpgp_key(_public(home, fpr), where="ec.asc")])
        binary = bytes(
            pysequoia.Sig.from_bytes(
                _detached(home, fpr, payload, "20250601T000000", tmp_path).signature
            )
        )
        assert packet_body(binary)[2] == 19  # ECDSA
        padded = pad_mpis(binary, [264, 264])
        with pytest.raises(BaseException, match="Not a signature"):
            pysequoia.Sig.from_bytes(padded)
        assert ring.verify(armor(padded), payload).fingerprint == fpr.upper()
        assert f"VALIDSIG {fpr.upper()}" in gpg_verify(home, padded, payload, tmp_path)
        with pytest.raises(SignatureError, match="does not verify"):
            ring.verify(padded, payload + b"x")
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], check=False,
                       env={**os.environ, "GNUPGHOME": str(home)})  # fmt: skip


def test_mpi_declaring_fewer_bits_than_it_holds_is_malformed(world: World) -> None:
    binary = bytes(pysequoia.Sig.from_bytes(world.rsa_commit.signature))
    body = packet_body(binary)
    at = mpi_offset(body)
    [(bits, raw)] = read_mpis(body[at:])
    while int.from_bytes(raw, "big").bit_length() <= bits - 8:
        bits -= 8
    lying = body[:at] + (bits - 8).to_bytes(2, "big") + raw  # the value has more bits than this
    with pytest.raises(SignatureError, match=r"bits than it declares|trailing bytes") as caught:
        OpenPgpKeyring([world.rsa]).verify(new_packet(lying), world.rsa_commit.payload)
    assert not isinstance(caught.value, UnknownKeyError)
    assert caught.value.exit_code == 1
