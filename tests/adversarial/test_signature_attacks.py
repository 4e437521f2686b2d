"""Signature tricks on commits: OpenPGP packets and keys (real gpg), SSHSIG (real ssh-keygen).

Each attack asserts the exit code (1: the gate blocks) and the reason; each class has an honest
control that still verifies, so a check that refuses everything would fail here too.

Decisions these tests hold (see integrity/openpgp.py):
- OpenPGP expiry is judged at the signature's creation time, as sequoia does.  That time is the
  signer's claim, so expiry only stops a signature that admits being late; the policy in force
  (which follows the commit graph) is what retires a key.
- Any revocation (of the certificate or of the signing subkey) voids every signature by it,
  whatever its reason ("superseded" included) and whatever date the signature claims.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pysequoia
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrity.errors import SignatureError, UnknownKeyError, UnsupportedSignatureError
from integrity.openpgp import (
    MAX_SIGNATURE_BYTES,
    OpenPgpKey,
    OpenPgpKeyring,
    load_openpgp_key,
    read_signature_packet,
)
from integrity.sshsig import parse_public_key, verify_sshsig
from tests.components.cli import sealgate
from tests.components.gitrepo import Repo, gpg_user, make_repo, ssh_user
from tests.integrity.test_openpgp import (
    armor,
    gpg_verify,
    mpi_offset,
    new_packet,
    packet_body,
    pad_mpis,
)

PAYLOAD = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@example.com> 1 +0000\n\nm\n"
OTHER = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@example.com> 2 +0000\n\nx\n"


# --- gpg at test time -------------------------------------------------------------------------


def _gpg(home: Path, *args: str, faked: str | None = None, stdin: bytes | None = None) -> bytes:
    cmd = ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
    if faked:
        cmd += ["--faked-system-time", faked]
    done = subprocess.run(
        [*cmd, *args], input=stdin, env={**os.environ, "GNUPGHOME": str(home)},
        capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def _fingerprints(home: Path, email: str) -> list[str]:
    listing = _gpg(home, "--with-colons", "--list-keys", f"<{email}>").decode()
    return [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]


def _key(home: Path, name: str, algo: str, usage: str, faked: str) -> str:
    _gpg(home, "--quick-gen-key", f"{name} <{name.lower()}@example.com>", algo, usage, "never",
         faked=faked)  # fmt: skip
    return _fingerprints(home, f"{name.lower()}@example.com")[0]


def _edit(home: Path, fpr: str, commands: str, faked: str | None = None) -> None:
    _gpg(home, "--command-fd", "0", "--expert", "--edit-key", fpr, faked=faked,
         stdin=commands.encode())  # fmt: skip


def _sign(home: Path, signer: str, payload: bytes, *extra: str, faked: str | None = None) -> bytes:
    """A detached armored signature, as `git commit -S` asks gpg for one."""
    return _gpg(home, "--local-user", signer, "--armor", "--detach-sign", *extra, faked=faked,
                stdin=payload)  # fmt: skip


def _public(home: Path, fpr: str) -> OpenPgpKey:
    return load_openpgp_key(_gpg(home, "--armor", "--export", fpr), where=f"{fpr}.asc")


def _binary(signature: bytes) -> bytes:
    return bytes(pysequoia.Sig.from_bytes(signature))


def _packets(binary: bytes) -> list[bytes]:
    """Whole packets (header included) of an exported certificate."""
    out = []
    pos = 0
    while pos < len(binary):
        first = binary[pos]
        if first & 0x40:
            octet = binary[pos + 1]
            if octet < 192:
                head, length = 2, octet
            elif octet < 224:
                head, length = 3, ((octet - 192) << 8) + binary[pos + 2] + 192
            else:
                head, length = 6, int.from_bytes(binary[pos + 2 : pos + 6], "big")
        else:
            size = 1 << (first & 3)
            head, length = 1 + size, int.from_bytes(binary[pos + 1 : pos + 1 + size], "big")
        out.append(binary[pos : pos + head + length])
        pos += head + length
    return out


@dataclass(frozen=True)
class Pgp:
    home: Path
    carol: str  # ed25519, signs with its primary key
    rita: str  # RSA, made in 2018 (for back-dated SHA-1 signatures)
    outsider: str
    rebound: str  # primary + subkey whose usage was changed to authentication at T+1h
    rebound_sub: str
    expiring: str  # primary + signing subkey, rebound at T+5min to expire a day later
    expiring_sub: str
    bound: str  # primary + signing subkey, nothing special
    bound_sub: str
    subrevoked: str  # primary + signing subkey, the subkey revoked (hard)
    subrevoked_sub: str
    retired: str  # revoked as "no longer used" (a soft revocation) after signing
    early_signatures: dict[str, bytes]  # key -> a signature over PAYLOAD dated T+30min

    def ring(self, *fprs: str) -> OpenPgpKeyring:
        return OpenPgpKeyring([_public(self.home, fpr) for fpr in fprs])


T = "20250101T000000"
T_5M = "20250101T000500"
T_30M = "20250101T003000"
T_1H = "20250101T010000"
T_2H = "20250101T020000"
T_3D = "20250104T000000"


@pytest.fixture(scope="module")
def pgp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pgp]:
    home = tmp_path_factory.mktemp("attack-gnupg")
    home.chmod(0o700)
    try:
        carol = _key(home, "Carol", "ed25519", "sign", T)
        rita = _key(home, "Rita", "rsa2048", "sign", "20180101T000000")
        outsider = _key(home, "Mallory", "ed25519", "sign", T)
        early: dict[str, bytes] = {}

        rebound = _key(home, "Rebound", "ed25519", "cert", T)
        _gpg(home, "--quick-add-key", rebound, "ed25519", "sign", "never", faked=T)
        rebound_sub = _fingerprints(home, "rebound@example.com")[1]
        early["rebound"] = _sign(home, rebound_sub + "!", PAYLOAD, faked=T_30M)
        late = _sign(home, rebound_sub + "!", OTHER, faked=T_2H)  # after the change below
        _edit(home, rebound, "key 1\nchange-usage\nS\nA\nQ\nsave\n", faked=T_1H)
        early["rebound-late"] = late

        expiring = _key(home, "Expiring", "ed25519", "cert", T)
        _gpg(home, "--quick-add-key", expiring, "ed25519", "sign", "never", faked=T)
        expiring_sub = _fingerprints(home, "expiring@example.com")[1]
        early["expiring"] = _sign(home, expiring_sub + "!", PAYLOAD, faked=T_30M)
        early["expiring-late"] = _sign(home, expiring_sub + "!", OTHER, faked=T_3D)
        # Five minutes after T the subkey is rebound to expire a day later: the late one is late.
        _gpg(home, "--quick-set-expire", expiring, "1d", expiring_sub, faked=T_5M)

        bound = _key(home, "Bound", "ed25519", "cert", T)
        _gpg(home, "--quick-add-key", bound, "ed25519", "sign", "never", faked=T)
        bound_sub = _fingerprints(home, "bound@example.com")[1]
        early["bound"] = _sign(home, bound_sub + "!", PAYLOAD, faked=T_30M)

        subrevoked = _key(home, "Subrev", "ed25519", "cert", T)
        _gpg(home, "--quick-add-key", subrevoked, "ed25519", "sign", "never", faked=T)
        subrevoked_sub = _fingerprints(home, "subrev@example.com")[1]
        early["subrevoked"] = _sign(home, subrevoked_sub + "!", PAYLOAD, faked=T_30M)
        _edit(home, subrevoked, "key 1\nrevkey\ny\n0\n\ny\nsave\n", faked=T_1H)

        retired = _key(home, "Retired", "ed25519", "sign", T)
        early["retired"] = _sign(home, retired, PAYLOAD, faked=T_30M)
        revocation = subprocess.run(
            ["gpg", "--pinentry-mode", "loopback", "--passphrase", "", "--command-fd", "0",
             "--no-tty", "--armor", "--faked-system-time", T_1H, "--gen-revoke", retired],
            input=b"y\n3\n\ny\n", env={**os.environ, "GNUPGHOME": str(home)},
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        _gpg(home, "--import", stdin=revocation)
        yield Pgp(
            home, carol, rita, outsider, rebound, rebound_sub, expiring, expiring_sub, bound,
            bound_sub, subrevoked, subrevoked_sub, retired, early,
        )  # fmt: skip
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], check=False,
                       env={**os.environ, "GNUPGHOME": str(home)})  # fmt: skip


def _refused(ring: OpenPgpKeyring, signature: bytes, payload: bytes, reason: str) -> SignatureError:
    with pytest.raises(SignatureError, match=reason) as caught:
        ring.verify(signature, payload)
    assert caught.value.exit_code == 1
    return caught.value


# --- signature packets ------------------------------------------------------------------------


def test_text_mode_signature_over_a_commit_is_refused(pgp: Pgp, tmp_path: Path) -> None:
    """gpg verifies it, but a type 0x01 signature also fits the payload with CRLF line ends."""
    ring = pgp.ring(pgp.carol)
    assert ring.verify(_sign(pgp.home, pgp.carol, PAYLOAD), PAYLOAD).fingerprint == pgp.carol
    text = _sign(pgp.home, pgp.carol, PAYLOAD, "--textmode")
    assert read_signature_packet(text).sig_type == 0x01
    assert f"VALIDSIG {pgp.carol}" in gpg_verify(pgp.home, text, PAYLOAD, tmp_path)
    error = _refused(ring, text, PAYLOAD, r"text-mode signature \(type 0x01\)")
    assert not isinstance(error, UnknownKeyError)
    _refused(ring, text, PAYLOAD.replace(b"\n", b"\r\n"), "text-mode")


def test_sha1_signature_is_refused_even_when_dated_before_the_sha1_cut_off(
    pgp: Pgp, tmp_path: Path
) -> None:
    """sequoia accepts SHA-1 data signatures dated before 2023; the date is the signer's claim."""
    ring = pgp.ring(pgp.rita)
    assert ring.verify(_sign(pgp.home, pgp.rita, PAYLOAD), PAYLOAD).fingerprint == pgp.rita
    sha1 = _sign(pgp.home, pgp.rita, PAYLOAD, "--digest-algo", "SHA1", faked="20190101T000000")
    assert read_signature_packet(sha1).hash_algorithm == 2
    assert f"VALIDSIG {pgp.rita}" in gpg_verify(pgp.home, sha1, PAYLOAD, tmp_path)
    _refused(ring, sha1, PAYLOAD, "uses SHA-1, which is refused whatever date it claims")


def _as_v3(signature: bytes) -> bytes:
    """The same key, hash and value in a version 3 packet (gpg can no longer make them)."""
    body = packet_body(_binary(signature))
    issuer = read_signature_packet(signature).issuer_fingerprints[0]
    v3 = bytes([3, 5, body[1]]) + b"\x5e\x0b\xe1\x00" + bytes.fromhex(issuer[-16:])
    v3 += bytes([body[2], body[3]]) + body[mpi_offset(body) - 2 :]
    return new_packet(v3)


def test_v3_signature_packet_is_refused(pgp: Pgp) -> None:
    v3 = _as_v3(_sign(pgp.home, pgp.rita, PAYLOAD))
    assert read_signature_packet(v3).version == 3
    error = _refused(
        pgp.ring(pgp.rita), v3, PAYLOAD, "version 3 signature packet, which is refused"
    )
    assert not isinstance(error, UnknownKeyError)
    with pytest.raises(UnknownKeyError, match=f"key ID {pgp.rita[-16:]}"):
        pgp.ring(pgp.carol).verify(armor(v3), PAYLOAD)


def test_signature_types_other_than_binary_data_are_refused(pgp: Pgp) -> None:
    body = bytearray(packet_body(_binary(_sign(pgp.home, pgp.carol, PAYLOAD))))
    for kind in (0x02, 0x10, 0x13, 0x18, 0x1F, 0x20, 0x40):
        body[1] = kind
        _refused(pgp.ring(pgp.carol), new_packet(bytes(body)), PAYLOAD, f"type 0x{kind:02x}")


def test_two_signature_packets_in_one_block_are_refused(pgp: Pgp) -> None:
    """An outsider's valid signature beside a policy key's signature over other data."""
    outsider = _binary(_sign(pgp.home, pgp.outsider, PAYLOAD))
    insider = _binary(_sign(pgp.home, pgp.carol, OTHER))
    ring = pgp.ring(pgp.carol, pgp.outsider)
    for blob in (outsider + insider, insider + outsider, insider + insider):
        for form in (blob, armor(blob)):
            _refused(ring, form, PAYLOAD, "holds 2 signature packets; git stores exactly one")
    one_pass = bytes([0xC4, 13, 3, 0, 10, 22]) + bytes.fromhex(pgp.carol[-16:]) + b"\x01"
    _refused(ring, armor(one_pass + insider), OTHER, "one-pass signature packet")
    marker = bytes([0xCA, 3]) + b"PGP"
    _refused(ring, armor(marker + insider), OTHER, "marker packet")


def test_unparseable_signature_names_its_issuer(pgp: Pgp) -> None:
    """Unknown issuer: "unknown key", even if the value is cut; a policy issuer: bad signature."""
    body = packet_body(_binary(_sign(pgp.home, pgp.carol, PAYLOAD)))
    cut = new_packet(body[:-7])
    with pytest.raises(UnknownKeyError, match=f"signed by {pgp.carol}, which is not an allowed"):
        pgp.ring(pgp.outsider).verify(armor(cut), PAYLOAD)
    error = _refused(pgp.ring(pgp.carol), armor(cut), PAYLOAD, "is malformed: signature MPI")
    assert not isinstance(error, UnknownKeyError)
    error = _refused(pgp.ring(pgp.carol), new_packet(body + b"\0\0"), PAYLOAD, "trailing bytes")
    assert not isinstance(error, UnknownKeyError)


def test_packet_framing_tricks(pgp: Pgp) -> None:
    ring = pgp.ring(pgp.carol)
    body = packet_body(_binary(_sign(pgp.home, pgp.carol, PAYLOAD)))
    old_format = bytes([0x80 | (2 << 2) | 1]) + len(body).to_bytes(2, "big") + body
    assert ring.verify(old_format, PAYLOAD).fingerprint == pgp.carol  # control: legal header
    partial = bytes([0xC2, 0xE0 | 5]) + body[:32] + bytes([len(body) - 32]) + body[32:]
    _refused(ring, armor(partial), PAYLOAD, "partial body length")
    indeterminate = bytes([0x80 | (2 << 2) | 3]) + body
    _refused(ring, indeterminate, PAYLOAD, "indeterminate packet length")
    _refused(ring, old_format + b"\x00", PAYLOAD, "not an OpenPGP packet header")
    _refused(ring, old_format[:-1], PAYLOAD, "truncated")
    _refused(ring, b"\xc2\xff\xff\xff\xff\xff" + body, PAYLOAD, "truncated")
    _refused(ring, b" " * (MAX_SIGNATURE_BYTES + 1), PAYLOAD, "more than")


# --- armor ------------------------------------------------------------------------------------


def test_armor_tricks(pgp: Pgp) -> None:
    ring = pgp.ring(pgp.carol)
    good = _sign(pgp.home, pgp.carol, PAYLOAD)
    begin = b"-----BEGIN PGP SIGNATURE-----\n"
    lines = good.split(b"\n")
    crc_line = next(line for line in lines if line.startswith(b"="))
    # controls: an informational header, no checksum, CRLF line ends, no final newline
    for ok in (
        good.replace(begin, begin + b"Comment: made with gpg\n"),
        good.replace(crc_line + b"\n", b""),
        good.replace(b"\n", b"\r\n"),
        good.rstrip(b"\n"),
    ):
        assert ring.verify(ok, PAYLOAD).fingerprint == pgp.carol
    flipped = crc_line[:-1] + (b"A" if crc_line[-1:] != b"A" else b"B")
    for attack, reason in (
        (good.replace(begin, begin + b"Hash: SHA1\n"), "unknown armor header 'Hash'"),
        (good.replace(begin, begin + b"X-Note: hello\n"), "unknown armor header 'X-Note'"),
        (good + b"trailing garbage\n", "data after the END PGP SIGNATURE line"),
        (good + _sign(pgp.home, pgp.carol, OTHER), "data after the END PGP SIGNATURE line"),
        (b"junk\n" + good, "not an armored OpenPGP signature"),
        (good.replace(crc_line, flipped), "armor checksum does not match"),
        (good.replace(b"-----END PGP SIGNATURE-----", b""), "no END PGP SIGNATURE line"),
        (good.replace(crc_line, b"-----\n" + crc_line), "stray"),
        (good.replace(lines[2], lines[2][:-1] + b"*"), "not valid base64"),
    ):
        error = _refused(ring, attack, PAYLOAD, reason)
        assert error.message.startswith("malformed OpenPGP signature")


# --- keys: subkeys, expiry, revocation ----------------------------------------------------------


def test_subkey_not_marked_for_signing_is_refused(pgp: Pgp, tmp_path: Path) -> None:
    """The subkey was rebound for authentication only before the signature was made."""
    ring = pgp.ring(pgp.rebound)
    late = pgp.early_signatures["rebound-late"]
    assert "Wrong key usage" in gpg_verify(pgp.home, late, OTHER, tmp_path) or (
        "VALIDSIG" not in gpg_verify(pgp.home, late, OTHER, tmp_path)
    )
    error = _refused(ring, late, OTHER, "does not verify")
    assert error.hint == f"subkey {pgp.rebound_sub} is not marked for signing"
    # gpg's change-usage replaces the old binding, so even a signature dated before it fails.
    _refused(ring, pgp.early_signatures["rebound"], PAYLOAD, "does not verify")
    bound = pgp.ring(pgp.bound)  # the control: the same layout, still marked for signing
    assert bound.verify(pgp.early_signatures["bound"], PAYLOAD).fingerprint == pgp.bound


def _without_subkey_binding(pgp: Pgp, fpr: str, corrupt: bool) -> OpenPgpKey:
    packets = _packets(_gpg(pgp.home, "--export", fpr))
    assert packets[-1][0] & 0x3F == 2 or (packets[-1][0] >> 2) & 0x0F == 2  # the binding
    binding = bytearray(packets[-1])
    binding[-3] ^= 0x01
    rest = b"".join(packets[:-1]) + (bytes(binding) if corrupt else b"")
    return load_openpgp_key(rest, where="tampered.asc")


def test_subkey_without_or_with_a_bad_binding_signature_is_refused(pgp: Pgp) -> None:
    signature = pgp.early_signatures["bound"]
    assert pgp.ring(pgp.bound).verify(signature, PAYLOAD).fingerprint == pgp.bound
    missing = OpenPgpKeyring([_without_subkey_binding(pgp, pgp.bound, corrupt=False)])
    error = _refused(missing, signature, PAYLOAD, f"signature by {pgp.bound_sub} does not")
    assert error.hint is not None and "has no binding signature" in error.hint
    bad = OpenPgpKeyring([_without_subkey_binding(pgp, pgp.bound, corrupt=True)])
    error = _refused(bad, signature, PAYLOAD, "does not verify")
    assert not isinstance(error, UnknownKeyError)


def test_signature_dated_after_the_subkey_expired_is_refused(pgp: Pgp) -> None:
    """Expiry is judged at the signature's creation time (the decision in the module doc)."""
    ring = pgp.ring(pgp.expiring)
    assert ring.verify(pgp.early_signatures["expiring"], PAYLOAD).fingerprint == pgp.expiring
    error = _refused(ring, pgp.early_signatures["expiring-late"], OTHER, "does not verify")
    assert error.hint is not None and "expired" in error.hint
    assert not isinstance(error, UnknownKeyError)


def test_signature_by_a_revoked_subkey_is_refused(pgp: Pgp) -> None:
    error = _refused(pgp.ring(pgp.subrevoked), pgp.early_signatures["subrevoked"], PAYLOAD,
                     f"subkey {pgp.subrevoked_sub} of {pgp.subrevoked} is revoked")  # fmt: skip
    assert not isinstance(error, UnknownKeyError)


def test_soft_revocation_voids_even_signatures_dated_before_it(pgp: Pgp) -> None:
    """sequoia would accept it (the revocation says "no longer used", dated later); we do not."""
    key = _public(pgp.home, pgp.retired)
    signature = pgp.early_signatures["retired"]
    result = pysequoia.verify(
        bytes=PAYLOAD, store=lambda _ids: [key.cert], signature=pysequoia.Sig.from_bytes(signature)
    )
    assert [str(v.certificate).upper() for v in result.valid_sigs] == [pgp.retired]
    error = _refused(OpenPgpKeyring([key]), signature, PAYLOAD, f"{pgp.retired} is revoked")
    assert error.hint is not None and "whatever date" in error.hint


# --- the same through `sealgate commits` --------------------------------------------------------


def _forge(repo: Repo, subject: str, signature_for: Callable[[bytes], bytes]) -> str:
    """Commit unsigned, then add the gpgsig header an attacker chose, and move main to it."""
    repo.write("f", subject + "\n")
    repo.commit_ssh(None, subject)
    payload = subprocess.run(["git", "-C", str(repo.path), "cat-file", "commit", "HEAD"],
                             capture_output=True, check=True).stdout  # fmt: skip
    header, _, message = payload.partition(b"\n\n")
    lines = signature_for(payload).decode().rstrip("\n").split("\n")
    raw = header + b"\ngpgsig " + "\n ".join(lines).encode() + b"\n\n" + message
    oid = subprocess.run(
        ["git", "-C", str(repo.path), "hash-object", "-t", "commit", "-w", "--stdin"],
        input=raw, capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip
    repo.git("update-ref", "refs/heads/main", oid)
    return oid


def test_commits_gate_on_openpgp_signature_tricks(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    alice = ssh_user(tmp_path, "alice")
    carol = gpg_user(repo, "Carol")
    home = repo.gnupghome
    mallory = _key(home, "Mallory", "ed25519", "sign", T)
    try:
        repo.write(".sealgate/keys/carol.asc", carol.armored)
        repo.write(".sealgate/policy.yml", (
            "version: 1\nsigners:\n"
            f'  - name: alice\n    roles: [developer, policy-admin]\n    ssh: ["{alice.public_line}"]\n'
            '  - name: carol\n    roles: [developer]\n    openpgp: ["keys/carol.asc"]\n'
        ))  # fmt: skip
        repo.commit_ssh(alice, "policy")
        repo.git("tag", "base")
        repo.write("f", "honest\n")
        repo.commit_gpg(carol, "honest carol")

        def carol_signs(payload: bytes, *extra: str) -> bytes:
            return _sign(home, carol.fingerprint, payload, *extra)

        def padded(payload: bytes) -> bytes:  # GitHub's encoding: zero bits in front of r and s
            return armor(pad_mpis(_binary(carol_signs(payload)), [264, 264]))

        padded_oid = _forge(repo, "padded like GitHub", padded)
        honest = sealgate("commits", "--repo", repo.path, "--range", f"base..{padded_oid}")
        assert honest.returncode == 0, honest.stdout + honest.stderr

        def two(payload: bytes) -> bytes:
            return armor(_binary(_sign(home, mallory, payload)) + _binary(carol_signs(OTHER)))

        def cut_outsider(payload: bytes) -> bytes:
            return armor(new_packet(packet_body(_binary(_sign(home, mallory, payload)))[:-5]))

        def cut_carol(payload: bytes) -> bytes:
            return armor(new_packet(packet_body(_binary(carol_signs(payload)))[:-5]))

        _forge(repo, "text mode", lambda p: carol_signs(p, "--textmode"))
        _forge(repo, "two packets", two)
        _forge(repo, "trailing garbage", lambda p: carol_signs(p) + b"hello\n")
        _forge(repo, "outsider, cut", cut_outsider)
        _forge(repo, "carol, cut", cut_carol)
        result = sealgate("commits", "--repo", repo.path, "--range", "base..HEAD", "--json")
        assert result.returncode == 1, result.stdout + result.stderr
        commits = json.loads(result.stdout)["commits"]
        reasons = {c["subject"]: c["reason"] for c in commits}
        codes = {c["subject"]: c["code"] for c in commits}
        assert reasons["honest carol"] is None
        assert reasons["padded like GitHub"] is None
        assert "text-mode signature (type 0x01)" in str(reasons["text mode"])
        assert "holds 2 signature packets" in str(reasons["two packets"])
        assert "data after the END PGP SIGNATURE line" in str(reasons["trailing garbage"])
        assert "unknown key" in str(reasons["outsider, cut"])
        assert mallory in str(reasons["outsider, cut"])
        assert "bad signature" in str(reasons["carol, cut"])
        assert "malformed" in str(reasons["carol, cut"])
        assert codes == {
            "honest carol": None,
            "padded like GitHub": None,
            "text mode": "bad-signature",
            "two packets": "bad-signature",
            "trailing garbage": "bad-signature",
            "outsider, cut": "unknown-key",  # a key the policy does not list, not a bad one
            "carol, cut": "bad-signature",
        }
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], check=False,
                       env={**os.environ, "GNUPGHOME": str(home)})  # fmt: skip


# --- SSHSIG -----------------------------------------------------------------------------------


def _ssh_string(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def _ssh_armor(blob: bytes) -> bytes:
    b64 = base64.b64encode(blob)
    body = [b64[i : i + 70] for i in range(0, len(b64), 70)]
    return b"\n".join([b"-----BEGIN SSH SIGNATURE-----", *body, b"-----END SSH SIGNATURE-----"])


def _ssh_dearmor(armored: bytes) -> bytes:
    return base64.b64decode(b"".join(armored.strip().split(b"\n")[1:-1]))


def _sshsig(
    key_blob: bytes, sign: Callable[[bytes], bytes], message: bytes, *,
    namespace: bytes = b"git", reserved: bytes = b"", hashalg: bytes = b"sha512",
) -> bytes:  # fmt: skip
    """PROTOCOL.sshsig: `sign` gets the data to sign and returns the inner signature blob."""
    digest = hashlib.new(hashalg.decode(), message).digest()
    fields = _ssh_string(namespace) + _ssh_string(reserved) + _ssh_string(hashalg)
    blob = b"SSHSIG" + (1).to_bytes(4, "big") + _ssh_string(key_blob) + fields
    return _ssh_armor(blob + _ssh_string(sign(b"SSHSIG" + fields + _ssh_string(digest))))


def _keygen_accepts(pub_line: str, signature: bytes, message: bytes, tmp: Path) -> bool:
    (tmp / "allowed").write_text(f"dev@example.com {pub_line}\n")
    (tmp / "check.sig").write_bytes(signature + b"\n")
    done = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(tmp / "allowed"), "-I", "dev@example.com",
         "-n", "git", "-s", str(tmp / "check.sig")],
        input=message, capture_output=True, check=False,
    )  # fmt: skip
    return done.returncode == 0


@dataclass(frozen=True)
class Ssh:
    ed_key: Path
    ed_line: str
    rsa_key: Path
    rsa_line: str


@pytest.fixture(scope="module")
def ssh(tmp_path_factory: pytest.TempPathFactory) -> Ssh:
    tmp = tmp_path_factory.mktemp("attack-ssh")
    ed, rs = ssh_user(tmp, "dev"), ssh_user(tmp, "ops", "rsa")
    return Ssh(ed.key, ed.public_line, rs.key, rs.public_line)


def _keygen_sign(key: Path, message: bytes, tmp: Path, namespace: str = "git") -> bytes:
    data = tmp / f"msg-{namespace}"
    data.write_bytes(message)
    sig = tmp / f"msg-{namespace}.sig"
    sig.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", str(key), str(data)],
                   check=True, capture_output=True)  # fmt: skip
    return sig.read_bytes().rstrip(b"\n")


def _ssh_refused(signature: bytes, reason: str, message: bytes = PAYLOAD) -> SignatureError:
    with pytest.raises(SignatureError, match=reason) as caught:
        verify_sshsig(signature, message, namespace="git")
    assert caught.value.exit_code == 1
    return caught.value


def _ed_private(ssh: Ssh) -> Ed25519PrivateKey:
    key = serialization.load_ssh_private_key(ssh.ed_key.read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def test_ssh_key_type_confusion(ssh: Ssh, tmp_path: Path) -> None:
    """An inner signature type that is not the key's own, and SHA-1 RSA, are refused."""
    ed_pub = parse_public_key(ssh.ed_line, where="dev.pub")
    assert verify_sshsig(_keygen_sign(ssh.ed_key, PAYLOAD, tmp_path), PAYLOAD) == ed_pub
    ed = _ed_private(ssh)
    for claimed in (b"rsa-sha2-512", b"ssh-rsa", b"ecdsa-sha2-nistp256"):

        def inner(data: bytes, kind: bytes = claimed) -> bytes:
            return _ssh_string(kind) + _ssh_string(ed.sign(data))

        forged = _sshsig(ed_pub.blob, inner, PAYLOAD)
        _ssh_refused(
            forged, f"signature type {claimed.decode()} does not match key type ssh-ed25519"
        )
    rsa_key = serialization.load_ssh_private_key(ssh.rsa_key.read_bytes(), None)
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    rsa_pub = parse_public_key(ssh.rsa_line, where="ops.pub")

    def sha1(data: bytes) -> bytes:
        value = rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA1())  # the downgrade under test
        return _ssh_string(b"ssh-rsa") + _ssh_string(value)

    legacy = _sshsig(rsa_pub.blob, sha1, PAYLOAD)
    _ssh_refused(legacy, "SHA-1 RSA signatures are not accepted")
    wrong_key = _sshsig(rsa_pub.blob, lambda d: _ssh_string(b"ssh-ed25519") + _ssh_string(ed.sign(d)),
                        PAYLOAD)  # fmt: skip
    _ssh_refused(wrong_key, "signature type ssh-ed25519 does not match key type ssh-rsa")


def test_ssh_namespace_confusion(ssh: Ssh, tmp_path: Path) -> None:
    """`ssh-keygen -Y sign -n file` over the very same bytes must not pass as a git signature."""
    file_sig = _keygen_sign(ssh.ed_key, PAYLOAD, tmp_path, namespace="file")
    _ssh_refused(file_sig, "SSH signature namespace is 'file', not 'git'")
    ed = _ed_private(ssh)
    blob = parse_public_key(ssh.ed_line, where="dev.pub").blob

    def inner(data: bytes) -> bytes:
        return _ssh_string(b"ssh-ed25519") + _ssh_string(ed.sign(data))

    for namespace in (b"git\x00", b"Git", b"git ", b""):
        forged = _sshsig(blob, inner, PAYLOAD, namespace=namespace)
        _ssh_refused(forged, "namespace is")


def test_ssh_reserved_field_must_be_empty(ssh: Ssh, tmp_path: Path) -> None:
    """OpenSSH skips the reserved field and verifies as if it were empty; Sealgate refuses it."""
    ed = _ed_private(ssh)
    blob = parse_public_key(ssh.ed_line, where="dev.pub").blob

    def inner(d: bytes) -> bytes:
        return _ssh_string(b"ssh-ed25519") + _ssh_string(ed.sign(d))

    control = _sshsig(blob, inner, PAYLOAD)
    assert _keygen_accepts(ssh.ed_line, control, PAYLOAD, tmp_path)
    assert verify_sshsig(control, PAYLOAD).blob == blob
    # 1. The field smuggled into a valid signature: ssh-keygen still says "Good".
    fields = _ssh_string(b"git") + _ssh_string(b"") + _ssh_string(b"sha512")
    raw = _ssh_dearmor(control)
    assert raw.count(fields) == 1
    with_x = _ssh_string(b"git") + _ssh_string(b"x") + _ssh_string(b"sha512")
    smuggled = _ssh_armor(raw.replace(fields, with_x))
    assert _keygen_accepts(ssh.ed_line, smuggled, PAYLOAD, tmp_path)
    _ssh_refused(smuggled, r"reserved field is not empty \(1 bytes\)")
    # 2. Signed over a non-empty field: ssh-keygen refuses; so do we, with the reason.
    signed_over = _sshsig(blob, inner, PAYLOAD, reserved=b"x")
    assert not _keygen_accepts(ssh.ed_line, signed_over, PAYLOAD, tmp_path)
    _ssh_refused(signed_over, r"reserved field is not empty \(1 bytes\)")


def test_ssh_trailing_data_and_non_canonical_base64(ssh: Ssh, tmp_path: Path) -> None:
    good = _keygen_sign(ssh.ed_key, PAYLOAD, tmp_path)
    assert verify_sshsig(good, PAYLOAD).key_type == "ssh-ed25519"
    blob = _ssh_dearmor(good)
    _ssh_refused(_ssh_armor(blob + b"\x00"), "trailing bytes after SSH signature")
    _ssh_refused(_ssh_armor(blob + _ssh_string(b"second")), "trailing bytes after SSH signature")
    _ssh_refused(good + b"\nextra", "not an armored SSH signature")
    _ssh_refused(good + b"\n" + good, "not an armored SSH signature|not valid base64")
    b64 = base64.b64encode(blob)
    assert len(blob) % 3 == 2  # an Ed25519 SSHSIG is 173 bytes: the last character has spare bits
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(b64[-2:-1])
    tweaked = b64[:-2] + alphabet[last | 1 : (last | 1) + 1] + b"="
    assert tweaked != b64 and base64.b64decode(tweaked) == blob  # same bytes, another spelling

    def one_line(text: bytes) -> bytes:
        return b"-----BEGIN SSH SIGNATURE-----\n" + text + b"\n-----END SSH SIGNATURE-----"

    assert verify_sshsig(one_line(b64), PAYLOAD).key_type == "ssh-ed25519"  # wrapping is free
    _ssh_refused(one_line(tweaked), "not valid base64")
    _ssh_refused(good.replace(b"\n", b"\n ", 1), "not valid base64")


def test_ssh_certificate_as_the_signing_key_is_refused(ssh: Ssh, tmp_path: Path) -> None:
    """A real certificate (ssh-keygen -s) on the signing key: refused, never trusted by its CA."""
    ca = ssh_user(tmp_path, "ca")
    pub = tmp_path / "dev.pub"
    pub.write_text(ssh.ed_line + "\n")
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca.key), "-I", "dev", "-n", "dev@example.com",
                    str(pub)], check=True, capture_output=True)  # fmt: skip
    cert_line = (tmp_path / "dev-cert.pub").read_text().split()
    assert cert_line[0] == "ssh-ed25519-cert-v01@openssh.com"
    cert_blob = base64.b64decode(cert_line[1])
    key_blob = parse_public_key(ssh.ed_line, where="dev.pub").blob
    blob = _ssh_dearmor(_keygen_sign(ssh.ed_key, PAYLOAD, tmp_path))
    swapped = blob.replace(_ssh_string(key_blob), _ssh_string(cert_blob), 1)
    assert swapped != blob
    with pytest.raises(UnsupportedSignatureError, match="SSH certificates") as caught:
        verify_sshsig(_ssh_armor(swapped), PAYLOAD)
    assert caught.value.exit_code == 1
    assert "ssh-ed25519-cert-v01@openssh.com" in caught.value.message


def test_ssh_security_key_signatures_are_supported_and_need_user_presence(tmp_path: Path) -> None:
    """sk-ssh-ed25519@openssh.com, signed in software per PROTOCOL.u2f; ssh-keygen agrees."""
    private = Ed25519PrivateKey.generate()
    app = b"ssh:"
    key_type = b"sk-ssh-ed25519@openssh.com"
    blob = _ssh_string(key_type) + _ssh_string(private.public_key().public_bytes_raw())
    blob += _ssh_string(app)
    line = f"{key_type.decode()} {base64.b64encode(blob).decode()}"

    def made(flags: int) -> bytes:
        def inner(data: bytes) -> bytes:
            counter = (1).to_bytes(4, "big")
            signed = hashlib.sha256(app).digest() + bytes([flags]) + counter
            signed += hashlib.sha256(data).digest()
            return (
                _ssh_string(key_type) + _ssh_string(private.sign(signed)) + bytes([flags]) + counter
            )

        return _sshsig(blob, inner, PAYLOAD)

    touched = made(0x01)
    assert _keygen_accepts(line, touched, PAYLOAD, tmp_path)
    assert verify_sshsig(touched, PAYLOAD) == parse_public_key(line, where="sk")
    _ssh_refused(touched, "does not verify", PAYLOAD + b"x")
    _ssh_refused(made(0x04), "without user presence")


# --- totality ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 300), st.binary(max_size=64)), max_size=4
    ),
    st.binary(max_size=16),
)
def test_packet_walker_raises_only_typed_errors(
    parts: list[tuple[int, int, bytes]], tail: bytes
) -> None:
    """Random packet headers, lengths and bodies (binary and armored) never crash the walker."""
    blob = b"".join(bytes([0x80 | tag]) + length.to_bytes(2, "big") + body
                    for tag, length, body in parts) + tail  # fmt: skip
    for form in (blob, armor(blob) if blob else b"", b"-----BEGIN PGP SIGNATURE-----\n\n" + blob):
        try:
            read_signature_packet(form)
        except SignatureError:
            pass
        try:
            OpenPgpKeyring([]).verify(form, PAYLOAD)
        except SignatureError:
            pass
        else:  # pragma: no cover - an empty keyring trusts nothing
            raise AssertionError("verified against an empty keyring")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.integers(0, 8))
def test_sshsig_raises_only_typed_errors(blob: bytes, prefix: int) -> None:
    armored = _ssh_armor(b"SSHSIG\x00\x00\x00\x01"[:prefix] + blob)
    with pytest.raises(SignatureError):
        verify_sshsig(armored, PAYLOAD)
