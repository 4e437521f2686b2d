"""`keys csr`: subjects, e-mail addresses and DNS names are checked before the key signs, and
each refusal names the value, the field and a stable code (never an empty "()")."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from signer.csr import build_csr
from signer.errors import ConfigError
from signer.keys import RemoteKey, open_key
from tests.components.cli import sealgate
from tests.components.hsm import HsmFixture


@pytest.fixture
def key(hsm: HsmFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[RemoteKey]:
    for name, value in hsm.token.env.items():
        monkeypatch.setenv(name, value)
    with open_key(hsm.uri("ec256")) as opened:
        yield opened


def test_a_good_request_carries_the_names_and_verifies(key: RemoteKey, tmp_path: Path) -> None:
    der = build_csr(
        key,
        "CN=Release signing,O=Example",
        emails=["release+sign@example.com", "o'brien.k@mail.example.org"],
        dns_names=["build.example.com", "xn--bcher-kva.example", "localhost"],
    )
    request = x509.load_der_x509_csr(der)
    assert request.is_signature_valid
    san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == [
        "release+sign@example.com",
        "o'brien.k@mail.example.org",
    ]
    assert san.get_values_for_type(x509.DNSName) == [
        "build.example.com",
        "xn--bcher-kva.example",
        "localhost",
    ]
    path = tmp_path / "req.der"
    path.write_bytes(der)
    checked = subprocess.run(
        ["openssl", "req", "-inform", "DER", "-in", str(path), "-verify", "-noout"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize(
    ("email", "reason"),
    [
        ("release", "exactly one @"),
        ("a@b@example.com", "exactly one @"),
        ("@example.com", "the part before @ is empty"),
        ("release@", "the part after @ is empty"),
        ("re lease@example.com", "spaces, controls"),
        ("release\n@example.com", "spaces, controls"),
        ('"quoted"@example.com', "spaces, controls, quotes"),
        (".release@example.com", "misplaced dots"),
        ("re..lease@example.com", "misplaced dots"),
        ("release.@example.com", "misplaced dots"),
        ("relé@example.com", "not ASCII"),
        ("x" * 65 + "@example.com", "more than 64"),
        ("release@exa mple.com", "is not a DNS name"),
        ("release@-example.com", "is not a DNS name"),
        ("release@example..com", "is not a DNS name"),
        ("release@192.168.0.1", "an IP address is not a DNS name"),
        ("release@[192.168.0.1]", "is not a DNS name"),
        ("release@example.com.", "is not a DNS name"),
        ("CN=x", "exactly one @"),
    ],
)
def test_an_email_that_is_not_an_address_is_refused(
    key: RemoteKey, email: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_csr(key, "CN=Release", emails=[email])
    error = caught.value
    assert (error.code, error.field, error.exit_code) == ("bad-email", "email", 2)
    assert f"e-mail {email!r} is not an address" in error.message and reason in error.message


@pytest.mark.parametrize(
    ("dns", "reason"),
    [
        ("", "it is empty"),
        ("build example.com", "is not 1 to 63 letters"),
        ("build_1.example.com", "is not 1 to 63 letters"),
        ("-build.example.com", "inner hyphens"),
        ("build-.example.com", "inner hyphens"),
        ("*.example.com", "label '*'"),
        ("example.com.", "label ''"),
        ("a" * 64 + ".example.com", "is not 1 to 63"),
        (".".join(["a" * 63] * 4) + ".com", "more than 253"),
        ("bücher.example", "xn-- form"),
        ("10.0.0.1", "an IP address is not a DNS name"),
        ("https://build.example.com", "is not 1 to 63"),
    ],
)
def test_a_dns_name_that_is_not_one_is_refused(key: RemoteKey, dns: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_csr(key, "CN=Release", dns_names=[dns])
    error = caught.value
    assert (error.code, error.field, error.exit_code) == ("bad-dns-name", "dns", 2)
    assert f"DNS name {dns!r} is not a DNS name" in error.message and reason in error.message


@pytest.mark.parametrize("subject", ["CN", "CN=a,,", "=x", "CN=a+", "O=Example,bogus"])
def test_a_bad_subject_names_itself_without_an_empty_detail(key: RemoteKey, subject: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_csr(key, subject)
    error = caught.value
    assert (error.code, error.field) == ("bad-subject", "subject")
    assert f"subject {subject!r} is not an RFC 4514 name" in error.message
    assert "()" not in error.diagnostics()


def test_an_empty_subject_is_refused(key: RemoteKey) -> None:
    with pytest.raises(ConfigError) as caught:
        build_csr(key, "")
    assert (caught.value.code, caught.value.message) == ("bad-subject", "the subject is empty")


def test_the_cli_shows_the_code_and_the_value(hsm: HsmFixture) -> None:
    result = sealgate(
        "keys", "csr", hsm.uri("ec256"), "--subject", "CN=Release",
        "--email", "not-an-address", env=hsm.env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("sealgate: error: [bad-email] ")
    assert "'not-an-address' is not an address: it needs exactly one @" in line
    assert "()" not in line and "BEGIN CERTIFICATE REQUEST" not in result.stdout
