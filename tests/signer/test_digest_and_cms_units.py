"""Units of the signing core that need no HSM: streaming digests, ECDSA encoding, the URI registry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.algorithms import ecdsa_der_to_raw, ecdsa_raw_to_der
from signer.digest import CHUNK, digest_file
from signer.errors import BackendUnavailableError, ConfigError
from signer.keys import open_key


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_streaming_digest_equals_hashlib(tmp_path: Path, size: int, hash_name: str) -> None:
    data = hashlib.shake_256(str(size).encode()).digest(size)
    path = tmp_path / "artifact"
    path.write_bytes(data)
    seen: list[int] = []
    result = digest_file(path, hash_name, seen.append)
    assert result.digest == hashlib.new(hash_name, data).digest()
    assert result.size == size == sum(seen)
    assert all(n <= CHUNK for n in seen)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=64))
def test_ecdsa_raw_der_round_trip(message: bytes) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.sign(message, ec.ECDSA(hashes.SHA256()))
    raw = ecdsa_der_to_raw(der, 32)
    assert len(raw) == 64
    assert ecdsa_raw_to_der(raw) == der
    assert decode_dss_signature(ecdsa_raw_to_der(raw)) == decode_dss_signature(der)


@pytest.mark.parametrize("raw", [b"", b"\x01\x02\x03"])
def test_malformed_raw_ecdsa(raw: bytes) -> None:
    with pytest.raises(BackendUnavailableError, match="malformed raw ECDSA") as caught:
        ecdsa_raw_to_der(raw)
    assert (caught.value.code, caught.value.exit_code) == ("backend-bad-signature", 3)


def test_registry_refuses_unknown_scheme_without_importing_anything() -> None:
    with pytest.raises(ConfigError, match="unknown key URI scheme 'azurekms'") as info:
        open_key("azurekms://vault.vault.azure.net/key")
    assert (info.value.exit_code, info.value.code) == (2, "unknown-key-scheme")


def test_signer_hashes_files_one_way_only() -> None:
    """signer.digest is the one file hasher of signer: nobody else streams a file into a hash."""
    root = Path(__file__).resolve().parents[2] / "signer"
    ways = ("file_digest(", ".readinto(", "posix_fadvise(")
    others = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "digest.py" and any(way in path.read_text() for way in ways)
    )
    assert others == []
    assert all(way in (root / "digest.py").read_text() for way in (".readinto(", "posix_fadvise("))
