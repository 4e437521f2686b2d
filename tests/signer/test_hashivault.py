"""`hashivault://` keys against a real OpenBao dev server (transit engine).

Every signature is checked with `cryptography` against the public key OpenBao publishes
for the version used, and the CLI's output is judged by stock OpenSSL.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from asn1crypto import cms as asn1_cms
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from sealgate.localpki import LocalCA, write_pem
from signer.algorithms import (
    KeyKind,
    RsaPadding,
    SignatureScheme,
    scheme_for,
    verify_digest_signature,
    verify_signature,
)
from signer.errors import BackendUnavailableError, ConfigError, SignerError
from signer.keys import hashivault, open_key
from signer.keys.hashivault import VaultTransitKey
from tests.components.cli import flip_byte, openssl_cms_verify, sealgate
from tests.components.openbao import OpenBao, free_port, openbao_server

_VAULT_VARS = (
    "VAULT_ADDR",
    "BAO_ADDR",
    "VAULT_TOKEN",
    "BAO_TOKEN",
    "VAULT_NAMESPACE",
    "BAO_NAMESPACE",
    "VAULT_CACERT",
    "BAO_CACERT",
    "SEALGATE_VAULT_TRANSIT_MOUNT",
    "SEALGATE_KMS_TIMEOUT",
)


@pytest.fixture(scope="session")
def bao() -> Iterator[OpenBao]:
    with openbao_server() as server:
        yield server


@pytest.fixture
def vault(bao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> OpenBao:
    """The server, with exactly VAULT_ADDR and VAULT_TOKEN pointing at it."""
    for name in _VAULT_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in bao.env().items():
        monkeypatch.setenv(name, value)
    return bao


@pytest.fixture
def sign_requests(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record the JSON body of every transit sign request the backend sends."""
    seen: list[dict[str, Any]] = []
    original = requests.Session.request

    def spy(self: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
        if "/sign/" in url:
            seen.append(kwargs.get("json") or {})
        return original(self, method, url, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy)
    return seen


def _load_public(bao: OpenBao, name: str, version: int) -> PublicKeyTypes:
    """The public key as OpenBao publishes it (PEM, or base64 raw bytes for Ed25519)."""
    info = bao.key_info(name)
    encoded: str = info["keys"][str(version)]["public_key"]
    if info["type"] == "ed25519":
        import base64

        return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded))
    return serialization.load_pem_public_key(encoded.encode())


def _same_key(a: PublicKeyTypes, b: PublicKeyTypes) -> bool:
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_bytes(der, spki) == b.public_bytes(der, spki)


def _all_messages(exc: SignerError) -> str:
    return " | ".join([str(exc), exc.message, exc.hint or "", exc.diagnostics(), repr(exc)])


# (transit type, expected public key class, RSA padding, RSA digest)
KEY_CASES = [
    pytest.param("ecdsa-p256", ec.EllipticCurvePublicKey, "pkcs1v15", "sha256", id="ecdsa-p256"),
    pytest.param("ecdsa-p384", ec.EllipticCurvePublicKey, "pkcs1v15", "sha256", id="ecdsa-p384"),
    pytest.param("rsa-3072", rsa.RSAPublicKey, "pkcs1v15", "sha256", id="rsa-3072-pkcs1v15"),
    pytest.param("rsa-3072", rsa.RSAPublicKey, "pss", "sha256", id="rsa-3072-pss-sha256"),
    pytest.param("rsa-3072", rsa.RSAPublicKey, "pss", "sha512", id="rsa-3072-pss-sha512"),
    pytest.param("ed25519", ed25519.Ed25519PublicKey, "pkcs1v15", "sha256", id="ed25519"),
]


@pytest.mark.parametrize(("key_type", "key_class", "rsa_padding", "rsa_digest"), KEY_CASES)
def test_signatures_verify_against_the_published_public_key(
    vault: OpenBao,
    key_type: str,
    key_class: type,
    rsa_padding: RsaPadding,
    rsa_digest: Any,
) -> None:
    name = vault.create_key(key_type)
    with VaultTransitKey(f"hashivault://{name}") as key:
        public = key.public_key()
        assert isinstance(public, key_class)
        assert _same_key(public, _load_public(vault, name, 1))
        assert key.key_version == 1
        scheme = scheme_for(public, rsa_digest=rsa_digest, rsa_padding=rsa_padding)
        tbs = b"signed attributes of " + key_type.encode()

        signature = key.sign(tbs, scheme)
        verify_signature(public, signature, tbs, scheme)
        key.check_signature(signature, tbs, scheme)
        with pytest.raises(InvalidSignature):
            verify_signature(public, signature, tbs + b"!", scheme)

        if scheme.signs_digest:
            digest = hashlib.new(scheme.hash_name, b"artifact bytes").digest()
            verify_digest_signature(public, key.sign_digest(digest, scheme), digest, scheme)
        else:
            with pytest.raises(ConfigError):
                key.sign_digest(hashlib.sha512(tbs).digest(), scheme)


def test_pss_salt_is_the_digest_length(vault: OpenBao) -> None:
    """CMS (RFC 4055) declares salt = digest length; transit's own default is the maximum."""
    name = vault.create_key("rsa-3072")
    with VaultTransitKey(f"hashivault://{name}") as key:
        public = key.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        for hash_name in ("sha256", "sha384", "sha512"):
            scheme = SignatureScheme(KeyKind.RSA, hash_name, "pss")
            digest = hashlib.new(hash_name, b"x").digest()
            signature = key.sign_digest(digest, scheme)
            algorithm = scheme.hash_algorithm
            # Strict check: exactly digest-size salt (cryptography does not auto-detect here).
            public.verify(
                signature,
                digest,
                padding.PSS(mgf=padding.MGF1(algorithm), salt_length=len(digest)),
                Prehashed(algorithm),
            )


@pytest.mark.parametrize(
    ("key_type", "rsa_padding"),
    [("ecdsa-p256", "pkcs1v15"), ("ecdsa-p384", "pkcs1v15"), ("rsa-3072", "pss"), ("ed25519", "")],
)
def test_sign_many_uses_one_batch_request(
    vault: OpenBao, sign_requests: list[dict[str, Any]], key_type: str, rsa_padding: str
) -> None:
    name = vault.create_key(key_type)
    payloads = [f"payload {i}".encode() for i in range(50)]
    with VaultTransitKey(f"hashivault://{name}") as key:
        public = key.public_key()
        scheme = scheme_for(public, rsa_padding="pss" if rsa_padding == "pss" else "pkcs1v15")
        signatures = key.sign_many(payloads, scheme)
    assert len(sign_requests) == 1
    assert len(sign_requests[0]["batch_input"]) == 50
    assert sign_requests[0]["key_version"] == 1
    assert len(signatures) == 50
    for payload, signature in zip(payloads, signatures, strict=True):
        verify_signature(public, signature, payload, scheme)
    # Order matters: signature i belongs to payload i, not to any other.
    with pytest.raises(InvalidSignature):
        verify_signature(public, signatures[0], payloads[1], scheme)


def test_sign_many_chunks_large_batches(
    vault: OpenBao, sign_requests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashivault, "BATCH_SIZE", 20)
    name = vault.create_key("ecdsa-p256")
    payloads = [bytes([i]) * 10 for i in range(50)]
    with VaultTransitKey(f"hashivault://{name}") as key:
        scheme = scheme_for(key.public_key())
        signatures = key.sign_many(payloads, scheme)
        assert [len(r.get("batch_input", [None])) for r in sign_requests] == [20, 20, 10]
        for payload, signature in zip(payloads, signatures, strict=True):
            verify_signature(key.public_key(), signature, payload, scheme)
        assert key.sign_many([], scheme) == []


def test_rotation_unpinned_uses_new_version_pinned_keeps_old(vault: OpenBao) -> None:
    name = vault.create_key("ecdsa-p256")
    v1_public = _load_public(vault, name, 1)
    assert vault.rotate(name) == 2
    v2_public = _load_public(vault, name, 2)
    assert not _same_key(v1_public, v2_public)
    tbs = b"after rotation"

    with VaultTransitKey(f"hashivault://{name}") as latest:
        assert latest.key_version == 2
        assert latest.display_uri == f"hashivault://{name}"
        assert _same_key(latest.public_key(), v2_public)
        scheme = scheme_for(latest.public_key())
        signature = latest.sign(tbs, scheme)
        verify_signature(v2_public, signature, tbs, scheme)
        with pytest.raises(InvalidSignature):
            verify_signature(v1_public, signature, tbs, scheme)

    with VaultTransitKey(f"hashivault://{name}/1") as pinned:
        assert pinned.key_version == 1
        assert pinned.display_uri == f"hashivault://{name}/1"
        assert _same_key(pinned.public_key(), v1_public)
        signature = pinned.sign(tbs, scheme)
        verify_signature(v1_public, signature, tbs, scheme)
        with pytest.raises(InvalidSignature):
            verify_signature(v2_public, signature, tbs, scheme)


def test_version_is_fixed_at_open_even_if_rotated_mid_run(
    vault: OpenBao, sign_requests: list[dict[str, Any]]
) -> None:
    """A rotation between open and sign must not make the signature disagree with the
    public key (and certificate) read at open."""
    name = vault.create_key("ecdsa-p384")
    with VaultTransitKey(f"hashivault://{name}") as key:
        vault.rotate(name)
        scheme = scheme_for(key.public_key())
        signatures = key.sign_many([b"a", b"b"], scheme)
        for payload, signature in zip([b"a", b"b"], signatures, strict=True):
            verify_signature(_load_public(vault, name, 1), signature, payload, scheme)
    assert {r["key_version"] for r in sign_requests} == {1}


def test_open_key_registry_resolves_hashivault(vault: OpenBao) -> None:
    name = vault.create_key("ecdsa-p256")
    with open_key(f"hashivault://{name}") as key:
        assert isinstance(key, VaultTransitKey)


def test_bao_variables_and_custom_mount(vault: OpenBao, monkeypatch: pytest.MonkeyPatch) -> None:
    vault.api("POST", "sys/mounts/signing/transit", {"type": "transit"})
    name = vault.create_key("ecdsa-p256", mount="signing/transit")
    monkeypatch.delenv("VAULT_ADDR")
    monkeypatch.delenv("VAULT_TOKEN")
    monkeypatch.setenv("BAO_ADDR", vault.address + "/")
    monkeypatch.setenv("BAO_TOKEN", vault.token)
    monkeypatch.setenv("SEALGATE_VAULT_TRANSIT_MOUNT", "/signing/transit/")
    with VaultTransitKey(f"hashivault://{name}") as key:
        scheme = scheme_for(key.public_key())
        verify_signature(key.public_key(), key.sign(b"m", scheme), b"m", scheme)


def test_namespace_header(vault: OpenBao, monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = vault.create_namespace()
    name = vault.create_key("ecdsa-p256", namespace=namespace)
    with pytest.raises(ConfigError, match="not found"):
        VaultTransitKey(f"hashivault://{name}")  # the key lives only in the namespace
    monkeypatch.setenv("VAULT_NAMESPACE", namespace)
    with VaultTransitKey(f"hashivault://{name}") as key:
        scheme = scheme_for(key.public_key())
        verify_signature(key.public_key(), key.sign(b"m", scheme), b"m", scheme)


# -- errors -------------------------------------------------------------------------------


def _assert_no_token(exc: SignerError, token: str) -> None:
    assert token not in _all_messages(exc)


def test_unknown_key_is_a_config_error(vault: OpenBao) -> None:
    with pytest.raises(ConfigError) as caught:
        VaultTransitKey("hashivault://no-such-key")
    assert "'no-such-key'" in caught.value.message
    assert "not found" in caught.value.message
    assert caught.value.exit_code == 2
    _assert_no_token(caught.value, vault.token)


def test_pinned_version_that_does_not_exist(vault: OpenBao) -> None:
    name = vault.create_key("ecdsa-p256")
    with pytest.raises(ConfigError) as caught:
        VaultTransitKey(f"hashivault://{name}/7")
    assert f"transit key '{name}' has no version 7" in caught.value.message
    assert caught.value.hint is not None and "latest is 1" in caught.value.hint
    _assert_no_token(caught.value, vault.token)


def test_wrong_token_is_permission_denied_without_the_token(
    vault: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = vault.create_key("ecdsa-p256")
    wrong = "s.WRONG-" + vault.token[::-1]
    monkeypatch.setenv("VAULT_TOKEN", wrong)
    with pytest.raises(ConfigError) as caught:
        VaultTransitKey(f"hashivault://{name}")
    assert f"permission denied for transit key '{name}'" in caught.value.message
    _assert_no_token(caught.value, wrong)
    _assert_no_token(caught.value, vault.token)


def test_token_without_sign_capability_is_refused_at_sign(
    vault: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A policy that may read the key but not sign: 403 on the sign call, named clearly."""
    name = vault.create_key("ecdsa-p256")
    vault.api(
        "POST",
        "sys/policies/acl/read-only-transit",
        {"policy": 'path "transit/keys/*" { capabilities = ["read"] }'},
    )
    limited = vault.api("POST", "auth/token/create", {"policies": ["read-only-transit"]})
    token: str = limited["auth"]["client_token"]
    monkeypatch.setenv("VAULT_TOKEN", token)
    with VaultTransitKey(f"hashivault://{name}") as key:
        scheme = scheme_for(key.public_key())
        with pytest.raises(ConfigError) as caught:
            key.sign(b"m", scheme)
    assert f"permission denied for transit key '{name}'" in caught.value.message
    _assert_no_token(caught.value, token)


@pytest.mark.parametrize("variable", ["VAULT_ADDR", "VAULT_TOKEN"])
def test_missing_address_or_token_names_the_variable(
    vault: OpenBao, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.delenv(variable)
    with pytest.raises(ConfigError) as caught:
        VaultTransitKey("hashivault://anything")
    assert variable in caught.value.diagnostics()
    _assert_no_token(caught.value, vault.token)


def test_unreachable_address_is_backend_unavailable(
    vault: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("VAULT_ADDR", address)
    with pytest.raises(BackendUnavailableError) as caught:
        VaultTransitKey("hashivault://k")
    # the backoff itself (full jitter, within the budget) is held by tests/signer/test_signer_http.py
    assert (caught.value.exit_code, caught.value.code) == (3, "kms-unreachable")
    assert address in caught.value.message
    assert "connection refused" in caught.value.message
    assert "4 attempts" in caught.value.message
    _assert_no_token(caught.value, vault.token)


class _Flaky:
    """A tiny local HTTP server answering each request from a script of status codes."""

    def __init__(self, statuses: list[int], body: Callable[[], bytes]) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                outer.hits += 1
                status = statuses[min(outer.hits, len(statuses)) - 1]
                payload = body() if status == 200 else b'{"errors":["Vault is sealed"]}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _reply  # noqa: N815 - the names http.server dispatches to
            do_POST = _reply  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_5xx_is_retried_then_backend_unavailable(
    vault: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = _Flaky([503], lambda: b"{}")
    try:
        monkeypatch.setenv("VAULT_ADDR", flaky.address)
        with pytest.raises(BackendUnavailableError) as caught:
            VaultTransitKey("hashivault://k")
    finally:
        flaky.close()
    assert flaky.hits == 4
    assert "HTTP 503: Vault is sealed" in caught.value.message
    _assert_no_token(caught.value, vault.token)


def test_5xx_then_success_recovers(vault: OpenBao, monkeypatch: pytest.MonkeyPatch) -> None:
    name = vault.create_key("ecdsa-p256")
    info = requests.get(
        f"{vault.address}/v1/transit/keys/{name}",
        headers={"X-Vault-Token": vault.token},
        timeout=10,
    ).content
    flaky = _Flaky([502, 500, 200], lambda: info)
    try:
        monkeypatch.setenv("VAULT_ADDR", flaky.address)
        with VaultTransitKey(f"hashivault://{name}") as key:
            assert key.key_version == 1
            assert _same_key(key.public_key(), _load_public(vault, name, 1))
    finally:
        flaky.close()
    assert flaky.hits == 3


@pytest.mark.parametrize("key_type", ["aes256-gcm96", "ecdsa-p521", "chacha20-poly1305"])
def test_unsupported_key_types_are_refused(vault: OpenBao, key_type: str) -> None:
    name = vault.create_key(key_type)
    with pytest.raises(ConfigError) as caught:
        VaultTransitKey(f"hashivault://{name}")
    assert f"'{name}'" in caught.value.message
    assert f"'{key_type}'" in caught.value.message


def test_scheme_of_another_key_kind_is_refused(vault: OpenBao) -> None:
    name = vault.create_key("ecdsa-p256")
    with VaultTransitKey(f"hashivault://{name}") as key:
        rsa_scheme = SignatureScheme(KeyKind.RSA, "sha256", "pss")
        with pytest.raises(ConfigError, match="ecdsa-p256 key"):
            key.sign(b"m", rsa_scheme)


def test_wrong_mount_is_named(vault: OpenBao, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALGATE_VAULT_TRANSIT_MOUNT", "not-mounted")
    with pytest.raises(ConfigError) as caught:
        VaultTransitKey("hashivault://k")
    assert "'not-mounted'" in caught.value.message
    assert "SEALGATE_VAULT_TRANSIT_MOUNT" in (caught.value.hint or "")


@pytest.mark.parametrize(
    "uri", ["hashivault://", "hashivault://k/0", "hashivault://k/x", "hashivault://a/1/2"]
)
def test_malformed_uris(vault: OpenBao, uri: str) -> None:
    with pytest.raises(ConfigError):
        VaultTransitKey(uri)


@pytest.mark.parametrize("address", ["vault:8200", "http://127.0.0.1:port", "ftp://h"])
def test_malformed_address_is_not_echoed(
    vault: OpenBao, monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    monkeypatch.setenv("VAULT_ADDR", address)
    with pytest.raises(ConfigError, match="VAULT_ADDR is not an http") as caught:
        VaultTransitKey("hashivault://k")
    assert address not in caught.value.diagnostics()


@pytest.mark.parametrize(
    "shape",
    ["http://root:{secret}@{host}", "http://{secret}@{host}", "http://{host}/?token={secret}",
     "http://{host}/#{secret}"],
)  # fmt: skip
def test_an_address_carrying_credentials_is_refused_without_echoing_them(
    vault: OpenBao, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    """A token pasted into VAULT_ADDR would reach proxies and logs: refuse it, never show it."""
    secret = "s.Sup3rSecretVaultToken"
    host = vault.address.split("://", 1)[1]
    monkeypatch.setenv("VAULT_ADDR", shape.format(secret=secret, host=host))
    with pytest.raises(ConfigError, match="VAULT_ADDR carries credentials") as caught:
        VaultTransitKey("hashivault://k")
    assert secret not in caught.value.diagnostics()


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_bad_timeout_setting(vault: OpenBao, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SEALGATE_KMS_TIMEOUT", value)
    with pytest.raises(ConfigError, match="SEALGATE_KMS_TIMEOUT"):
        VaultTransitKey("hashivault://k")


# -- end to end through the CLI, judged by OpenSSL -----------------------------------------


def _openssl_ed25519_probe(workdir: Path) -> bool:
    """Whether this OpenSSL can sign and verify Ed25519 CMS at all.

    OpenSSL 3.0 cannot (`eddsa_digest_signverify_init: invalid digest`, even for a CMS it
    would make itself); there the Ed25519 case is judged in-process only.
    """
    key = ed25519.Ed25519PrivateKey.generate()
    ca = LocalCA()
    cert = ca.issue(key.public_key())
    (workdir / "probe.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    write_pem(workdir / "probe.pem", cert)
    root = write_pem(workdir / "probe-root.pem", ca.root)
    content = workdir / "probe.txt"
    content.write_bytes(b"probe")
    signed = subprocess.run(
        [
            "openssl",
            "cms",
            "-sign",
            "-binary",
            "-md",
            "sha512",
            "-nosmimecap",
            "-in",
            str(content),
            "-signer",
            str(workdir / "probe.pem"),
            "-inkey",
            str(workdir / "probe.key"),
            "-outform",
            "DER",
            "-out",
            str(workdir / "probe.p7s"),
        ],
        capture_output=True,
        check=False,
    )
    return signed.returncode == 0 and (
        openssl_cms_verify(workdir / "probe.p7s", content, root).returncode == 0
    )


@pytest.fixture(scope="session")
def openssl_ed25519_cms(tmp_path_factory: pytest.TempPathFactory) -> bool:
    return _openssl_ed25519_probe(tmp_path_factory.mktemp("openssl-probe"))


def _verify_cms_in_process(
    p7s: Path, artifact: Path, public: PublicKeyTypes, rsa_padding: RsaPadding
) -> None:
    """Check the CMS with asn1crypto + cryptography: messageDigest over the artifact, and
    the signature over the DER SET OF signed attributes. Raises InvalidSignature."""
    signed = asn1_cms.ContentInfo.load(p7s.read_bytes())["content"]
    assert signed["encap_content_info"]["content"].native is None  # detached
    signer = signed["signer_infos"][0]
    hash_name = signer["digest_algorithm"]["algorithm"].native
    attrs = {a["type"].native: a["values"][0].native for a in signer["signed_attrs"]}
    if attrs["message_digest"] != hashlib.new(hash_name, artifact.read_bytes()).digest():
        raise InvalidSignature("messageDigest does not match the artifact")
    tbs = b"\x31" + signer["signed_attrs"].dump()[1:]  # [0] IMPLICIT -> SET OF
    scheme = scheme_for(public, rsa_digest=hash_name, rsa_padding=rsa_padding)
    verify_signature(public, signer["signature"].native, tbs, scheme)


@pytest.mark.parametrize(
    ("key_type", "extra"),
    [
        ("ecdsa-p256", []),
        ("ecdsa-p384", []),
        ("rsa-3072", []),
        ("rsa-3072", ["--rsa-padding", "pss"]),
        ("ed25519", []),
    ],
)
def test_cli_sign_verifies_with_openssl(
    vault: OpenBao,
    tmp_path: Path,
    openssl_ed25519_cms: bool,
    key_type: str,
    extra: list[str],
) -> None:
    name = vault.create_key(key_type)
    ca = LocalCA()
    with VaultTransitKey(f"hashivault://{name}") as key:
        public = key.public_key()
    assert isinstance(
        public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    )
    cert = write_pem(tmp_path / "signer.pem", ca.issue(public))
    root = write_pem(tmp_path / "root.pem", ca.root)
    artifacts = [tmp_path / "app.tar.gz", tmp_path / "app.whl"]
    for i, artifact in enumerate(artifacts):
        artifact.write_bytes(hashlib.shake_256(bytes([i])).digest(50_000))

    env = {**os.environ, **vault.env()}
    result = sealgate(
        "sign", "--key", f"hashivault://{name}", "--cert", cert, *extra, *artifacts, env=env
    )
    assert result.returncode == 0, result.stderr
    assert vault.token not in result.stdout + result.stderr

    use_openssl = key_type != "ed25519" or openssl_ed25519_cms
    padding_name: RsaPadding = "pss" if "pss" in extra else "pkcs1v15"
    for artifact in artifacts:
        p7s = artifact.with_name(artifact.name + ".p7s")
        assert p7s.read_bytes()[:1] == b"\x30"  # DER SEQUENCE
        _verify_cms_in_process(p7s, artifact, public, padding_name)
        if use_openssl:
            verified = openssl_cms_verify(p7s, artifact, root)
            assert verified.returncode == 0, verified.stderr
        flip_byte(artifact, 1234)
        with pytest.raises(InvalidSignature):
            _verify_cms_in_process(p7s, artifact, public, padding_name)
        if use_openssl:
            tampered = openssl_cms_verify(p7s, artifact, root)
            assert tampered.returncode != 0, "a flipped byte must fail verification"


def test_cli_exit_codes_hide_the_token(vault: OpenBao, tmp_path: Path) -> None:
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"data")
    ca = LocalCA()
    cert = write_pem(
        tmp_path / "c.pem", ca.issue(ec.generate_private_key(ec.SECP256R1()).public_key())
    )
    env = {**os.environ, **vault.env()}
    missing = sealgate("sign", "--key", "hashivault://nope", "--cert", cert, artifact, env=env)
    assert missing.returncode == 2
    assert "'nope'" in missing.stderr
    down = sealgate(
        "sign",
        "--key",
        "hashivault://nope",
        "--cert",
        cert,
        artifact,
        env={**env, "VAULT_ADDR": f"http://127.0.0.1:{free_port()}"},
    )
    assert down.returncode == 3
    for result in (missing, down):
        assert vault.token not in result.stdout + result.stderr
    assert not (tmp_path / "a.bin.p7s").exists()
