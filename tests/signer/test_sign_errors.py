"""Bad input to `sign`: one line naming what is wrong, the documented exit code, and no file written."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from sealgate.localpki import write_pem
from tests.components.cli import sealgate
from tests.components.hsm import HsmFixture


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "a.bin").write_bytes(b"first artifact\n")
    (tmp_path / "b.bin").write_bytes(b"second artifact\n")
    return tmp_path


def _assert_nothing_written(workdir: Path) -> None:
    leftovers = [p.name for p in workdir.rglob("*") if p.name.endswith((".p7s", ".tmp"))]
    assert leftovers == []


def _fails(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    stderr = result.stderr
    assert result.returncode == code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("sealgate: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_artifact_fails_the_whole_batch(hsm: HsmFixture, workdir: Path) -> None:
    missing = workdir / "missing.bin"
    result = sealgate("sign", "--key", hsm.uri("ec256"), workdir / "a.bin", missing, env=hsm.env)
    _fails(result, 2, str(missing), "no such artifact")
    _assert_nothing_written(workdir)


def test_directory_is_not_an_artifact(hsm: HsmFixture, workdir: Path) -> None:
    (workdir / "dist").mkdir()
    result = sealgate(
        "sign", "--key", hsm.uri("ec256"), workdir / "a.bin", workdir / "dist", env=hsm.env
    )
    _fails(result, 2, "dist", "is a directory")
    _assert_nothing_written(workdir)


def test_unreadable_artifact(hsm: HsmFixture, workdir: Path) -> None:
    # Root reads through file modes, so make the path itself unreadable: a file used as a folder.
    bad = workdir / "a.bin" / "inner"
    result = sealgate("sign", "--key", hsm.uri("ec256"), workdir / "b.bin", bad, env=hsm.env)
    _fails(result, 2, str(bad), "cannot use the artifact path (Not a directory)")
    _assert_nothing_written(workdir)


@pytest.mark.parametrize(
    ("key", "needle"),
    [
        ("file:///etc/key.pem", "unknown key URI scheme 'file'"),
        ("gpg://ABCD", "unknown key URI scheme 'gpg'"),
        ("just-a-name", "is not a URI"),
    ],
)
def test_unknown_uri_scheme(hsm: HsmFixture, workdir: Path, key: str, needle: str) -> None:
    result = sealgate("sign", "--key", key, workdir / "a.bin", env=hsm.env)
    _fails(result, 2, needle, "no file-key backend")
    _assert_nothing_written(workdir)


def test_wrong_pin_names_the_token_and_hides_the_pin(hsm: HsmFixture, workdir: Path) -> None:
    pin = "not-the-pin-4711"
    uri = f"pkcs11:token=sealgate-test;object=ec256?module-path={hsm.token.module}&pin-value={pin}"
    result = sealgate("sign", "--key", uri, workdir / "a.bin", env=hsm.env)
    _fails(result, 2, "[wrong-pin]", "PIN rejected", "sealgate-test")
    assert pin not in result.stderr + result.stdout
    _assert_nothing_written(workdir)


def test_pin_from_environment(hsm: HsmFixture, workdir: Path) -> None:
    uri = f"pkcs11:token=sealgate-test;object=ec256?module-path={hsm.token.module}"
    no_pin = sealgate("sign", "--key", uri, workdir / "a.bin", env=hsm.env)
    _fails(no_pin, 2, "no PIN given", "SEALGATE_PKCS11_PIN")
    pin = hsm.token.pin_file.read_text()
    ok = sealgate(
        "sign",
        "--key",
        uri,
        "--json",
        workdir / "a.bin",
        env={**hsm.env, "SEALGATE_PKCS11_PIN": pin},
    )
    assert ok.returncode == 0, ok.stderr
    assert pin not in ok.stdout + ok.stderr


def test_missing_token(hsm: HsmFixture, workdir: Path) -> None:
    uri = hsm.uri("ec256").replace("token=sealgate-test", "token=no-such-token")
    result = sealgate("sign", "--key", uri, workdir / "a.bin", env=hsm.env)
    _fails(result, 2, "token=no-such-token", "no such token", "sealgate-test")
    _assert_nothing_written(workdir)


def test_missing_object(hsm: HsmFixture, workdir: Path) -> None:
    result = sealgate("sign", "--key", hsm.uri("no-such-key"), workdir / "a.bin", env=hsm.env)
    _fails(result, 2, "object=no-such-key", "no private key")
    _assert_nothing_written(workdir)


def test_missing_module(hsm: HsmFixture, workdir: Path) -> None:
    uri = hsm.uri("ec256").replace(hsm.token.module, "/nonexistent/libpkcs11.so")
    result = sealgate("sign", "--key", uri, workdir / "a.bin", env=hsm.env)
    _fails(result, 2, "[pkcs11-module-missing]", "/nonexistent/libpkcs11.so", "does not exist")


def _not_a_module(workdir: Path, kind: str) -> Path:
    if kind == "text":
        path = workdir / "libfake-pkcs11.so"
        path.write_text("this is not a shared library\n")
        return path
    if kind == "library":  # a real shared library, just not a PKCS#11 one
        import _ssl

        return Path(_ssl.__file__)
    path = workdir / "modules.d"
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("text", "not a PKCS#11 library (file too short)"),
        ("library", "not a PKCS#11 library (undefined symbol: C_GetFunctionList)"),
        ("directory", "a directory, not a PKCS#11 library"),
    ],
)
def test_a_module_path_that_is_not_a_pkcs11_library_is_configuration(
    hsm: HsmFixture, workdir: Path, kind: str, reason: str
) -> None:
    """Exit 2, not 3: nothing is wrong with any HSM, the URI names the wrong file."""
    module = _not_a_module(workdir, kind)
    uri = hsm.uri("ec256").replace(hsm.token.module, str(module))
    result = sealgate("sign", "--key", uri, workdir / "a.bin", env=hsm.env)
    _fails(result, 2, "[not-a-pkcs11-module]", f"PKCS#11 module {module}", reason)
    _assert_nothing_written(workdir)


@pytest.mark.parametrize("shape", ["long-name", "long-path", "below-a-file"])
def test_a_module_path_the_os_refuses_is_a_path_error(
    hsm: HsmFixture, workdir: Path, shape: str
) -> None:
    module = {
        "long-name": f"/usr/lib/{'m' * 300}.so",
        "long-path": "/" + "/".join(["d" * 200] * 25) + "/lib.so",
        "below-a-file": str(workdir / "a.bin" / "lib.so"),
    }[shape]
    reason = "Not a directory" if shape == "below-a-file" else "File name too long"
    uri = hsm.uri("ec256").replace(hsm.token.module, module)
    result = sealgate("sign", "--key", uri, workdir / "a.bin", env=hsm.env)
    _fails(result, 2, "[path-error]", f"PKCS#11 module {module[:60]}", f"({reason})")
    assert "Traceback" not in result.stderr


def test_missing_token_lists_the_tokens_present_exactly(hsm: HsmFixture, workdir: Path) -> None:
    """SoftHSM shows a free slot with an empty, uninitialized token: it is not listed (it made
    the hint end in a comma)."""
    uri = hsm.uri("ec256").replace("token=sealgate-test", "token=no-such-token")
    result = sealgate("sign", "--key", uri, workdir / "a.bin", env=hsm.env)
    _fails(result, 2, "[token-not-found]")
    assert result.stderr.rstrip("\n").endswith(
        f"no such token in {hsm.token.module} (tokens present: sealgate-test)"
    ), result.stderr


def test_a_pin_source_that_is_a_fifo_fails_at_once(hsm: HsmFixture, workdir: Path) -> None:
    fifo = workdir / "pin.fifo"
    os.mkfifo(fifo)
    uri = f"pkcs11:token=sealgate-test;object=ec256?module-path={hsm.token.module}"
    result = sealgate(
        "sign", "--key", f"{uri}&pin-source=file:{fifo}", workdir / "a.bin", env=hsm.env
    )
    _fails(result, 2, "[not-a-file]", f"pkcs11 pin-source {fifo}: a FIFO")


def test_certificate_of_another_key(hsm: HsmFixture, workdir: Path) -> None:
    result = sealgate(
        "sign",
        "--key",
        hsm.uri("ec256"),
        "--cert",
        hsm.cert_pems["ec384"],
        workdir / "a.bin",
        env=hsm.env,
    )
    _fails(result, 2, str(hsm.cert_pems["ec384"]), "does not match the public key", "object=ec256")
    _assert_nothing_written(workdir)


def test_certificate_without_code_signing_eku(hsm: HsmFixture, workdir: Path) -> None:
    cert = hsm.ca.issue(
        hsm.certs["ec256"].public_key(),
        "TLS server",
        eku=[ExtendedKeyUsageOID.SERVER_AUTH],
    )
    pem = write_pem(workdir / "tls.pem", cert)
    result = sealgate(
        "sign", "--key", hsm.uri("ec256"), "--cert", pem, workdir / "a.bin", env=hsm.env
    )
    _fails(result, 2, str(pem), "lacks the codeSigning extended key usage")
    _assert_nothing_written(workdir)


def test_certificate_without_any_eku(hsm: HsmFixture, workdir: Path) -> None:
    cert = hsm.ca.issue(hsm.certs["ec256"].public_key(), "No EKU", eku=[])
    pem = write_pem(workdir / "noeku.pem", cert)
    result = sealgate(
        "sign", "--key", hsm.uri("ec256"), "--cert", pem, workdir / "a.bin", env=hsm.env
    )
    _fails(result, 2, "has no extendedKeyUsage")
    _assert_nothing_written(workdir)


def test_expired_certificate(hsm: HsmFixture, workdir: Path) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    cert = hsm.ca.issue(
        hsm.certs["ec256"].public_key(),
        "Expired",
        not_before=past - dt.timedelta(days=30),
        not_after=past,
    )
    pem = write_pem(workdir / "expired.pem", cert)
    result = sealgate(
        "sign", "--key", hsm.uri("ec256"), "--cert", pem, workdir / "a.bin", env=hsm.env
    )
    _fails(result, 2, "had expired at")
    _assert_nothing_written(workdir)


def test_certificate_file_that_is_not_a_certificate(hsm: HsmFixture, workdir: Path) -> None:
    junk = workdir / "junk.pem"
    junk.write_text("hello\n")
    result = sealgate(
        "sign", "--key", hsm.uri("ec256"), "--cert", junk, workdir / "a.bin", env=hsm.env
    )
    _fails(result, 2, str(junk), "not a PEM or DER X.509 certificate")


def test_key_without_certificate_anywhere(hsm: HsmFixture, workdir: Path) -> None:
    result = sealgate("sign", "--key", hsm.uri("nocert"), workdir / "a.bin", env=hsm.env)
    _fails(result, 2, "object=nocert", "--cert")
    _assert_nothing_written(workdir)


def test_two_artifacts_with_one_signature_path(hsm: HsmFixture, workdir: Path) -> None:
    (workdir / "x").mkdir()
    (workdir / "x" / "a.bin").write_bytes(b"other")
    result = sealgate(
        "sign",
        "--key",
        hsm.uri("ec256"),
        "--out-dir",
        workdir / "sigs",
        workdir / "a.bin",
        workdir / "x" / "a.bin",
        env=hsm.env,
    )
    _fails(result, 2, "would overwrite")
    _assert_nothing_written(workdir)


def test_signature_path_blocked_by_a_directory(hsm: HsmFixture, workdir: Path) -> None:
    (workdir / "b.bin.p7s").mkdir()
    result = sealgate(
        "sign", "--key", hsm.uri("ec256"), workdir / "a.bin", workdir / "b.bin", env=hsm.env
    )
    _fails(result, 2, "b.bin.p7s", "is a directory")
    assert not (workdir / "a.bin.p7s").exists()


def test_missing_key_option(workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SEALGATE_KEY"}
    result = sealgate("sign", workdir / "a.bin", env=env)
    _fails(result, 2, "--key is required")


def test_unknown_curve_is_refused() -> None:
    from signer.algorithms import scheme_for
    from signer.errors import ConfigError

    with pytest.raises(ConfigError, match="unsupported EC curve secp521r1"):
        scheme_for(ec.generate_private_key(ec.SECP521R1()).public_key())
