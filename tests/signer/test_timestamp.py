"""RFC 3161 timestamps at signing time and later, against a real local TSA and broken ones."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from asn1crypto import tsp

from signer.cmsverify import parse_signed_data
from tests.components.cli import openssl_cms_verify, sealgate
from tests.components.hsm import HsmFixture
from tests.components.tsa import (
    TSA_POLICY,
    LocalTsa,
    TsaPki,
    openssl_ts_verify_token,
    start_tsa,
)


def _artifacts(tmp_path: Path, count: int = 1) -> list[Path]:
    paths = []
    for i in range(count):
        path = tmp_path / f"app-{i}.tar.gz"
        path.write_bytes(f"release payload {i}\n".encode() * 100)
        paths.append(path)
    return paths


def _sign(hsm: HsmFixture, tsa_pki: TsaPki, *args: str | Path) -> tuple[int, str, str]:
    result = sealgate(
        "sign", "--key", hsm.uri("ec256"), "--chain", hsm.chain_pem,
        "--tsa-roots", tsa_pki.root_pem, *args, env=hsm.env,
    )  # fmt: skip
    return result.returncode, result.stdout, result.stderr


def _token_and_signature(p7s: Path) -> tuple[bytes, bytes]:
    message = parse_signed_data(p7s.read_bytes(), str(p7s))
    [token] = message.timestamp_tokens
    return token, message.signature


@pytest.mark.parametrize("mode", ["good", "rsa", "ess_v1"])
def test_timestamped_signature_verifies_with_stock_openssl(
    hsm: HsmFixture, tsa_pki: TsaPki, tsas: dict[str, LocalTsa], tmp_path: Path, mode: str
) -> None:
    [artifact] = _artifacts(tmp_path)
    code, out, err = _sign(hsm, tsa_pki, "--tsa", tsas[mode].url, "--json", artifact)
    assert code == 0, err
    [entry] = json.loads(out)["signed"]
    assert entry["timestamp"]["tsa_url"] == tsas[mode].url
    p7s = Path(entry["output"])
    # the CMS signature is still exactly what OpenSSL verifies (CAdES-T)
    assert openssl_cms_verify(p7s, artifact, hsm.root_pem).returncode == 0
    # and the token, taken out, is a valid RFC 3161 token over the signature value
    token, signature = _token_and_signature(p7s)
    verified = openssl_ts_verify_token(token, signature, tsa_pki.root_pem)
    assert verified.returncode == 0, verified.stderr
    assert "Verification: OK" in verified.stdout
    # over other data it is not
    assert openssl_ts_verify_token(token, signature[:-1] + b"\0", tsa_pki.root_pem).returncode != 0


def test_a_timestamp_has_one_json_shape_with_a_redacted_url(
    hsm: HsmFixture, tsa_pki: TsaPki, tsas: dict[str, LocalTsa], tmp_path: Path
) -> None:
    """`TimestampToken.as_json()` is what `sign --json` shows: every field, the URL redacted."""
    [artifact] = _artifacts(tmp_path)
    host = tsas["good"].url.split("://", 1)[1]
    url = f"http://stamper:hunter2secret@{host}?token=s3cr3t-value"
    code, out, err = _sign(hsm, tsa_pki, "--tsa", url, "--json", artifact)
    assert code == 0, err
    stamp = json.loads(out)["signed"][0]["timestamp"]
    assert set(stamp) == {"gen_time", "tsa", "serial", "policy", "digest_algorithm", "tsa_url"}
    assert stamp["tsa_url"] == f"http://{host}?token=REDACTED"
    assert "hunter2secret" not in out and "s3cr3t-value" not in out
    assert stamp["policy"] == TSA_POLICY
    assert stamp["digest_algorithm"] == "sha256"
    assert stamp["tsa"] == "CN=Sealgate Test TSA (good),O=Sealgate Tests"
    gen_time = dt.datetime.fromisoformat(stamp["gen_time"])
    assert gen_time.utcoffset() == dt.timedelta(0)
    token, _ = _token_and_signature(Path(json.loads(out)["signed"][0]["output"]))
    tst = tsp.TSTInfo.load(parse_signed_data(token, "token").econtent)
    assert int(stamp["serial"], 16) == tst["serial_number"].native
    assert gen_time == tst["gen_time"].native


def test_failover_to_the_next_tsa(
    hsm: HsmFixture, tsa_pki: TsaPki, tsas: dict[str, LocalTsa], tmp_path: Path
) -> None:
    [artifact] = _artifacts(tmp_path)
    code, out, err = _sign(
        hsm, tsa_pki, "--tsa", tsas["refuse"].url, "--tsa", tsas["wrong_nonce"].url,
        "--tsa", tsas["good"].url, "--tsa-retries", "0", "--json", artifact,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["signed"][0]["timestamp"]["tsa_url"] == tsas["good"].url


@pytest.mark.parametrize(
    ("mode", "code", "reason"),
    [
        ("refuse", "tsa-unreachable", "connection refused (1 attempt)"),
        ("garbage", "timestamp-malformed", "not a timestamp response"),
        ("http_error", "tsa-unreachable", "HTTP 500 (1 attempt)"),
        ("slow", "tsa-unreachable", "timed out after 1 s"),
        ("wrong_nonce", "nonce-mismatch", "nonce does not match"),
        ("wrong_imprint", "timestamp-imprint-mismatch", "message imprint is not over this signature"),
        ("untrusted", "tsa-untrusted", "signature does not verify with that one's key"),
        ("no_eku", "tsa-untrusted", "has no extendedKeyUsage; timeStamping is required"),
        ("noncritical_eku", "tsa-untrusted", "not marked critical"),
        ("expired", "tsa-untrusted", "had expired"),
        ("rejection", "tsa-rejected",
         "TSA answered status rejection (bad_request): rejected (deliberate)"),
        ("no_token", "timestamp-malformed", "sent no token"),
        ("no_cert", "signer-certificate-missing", "certificate is not in the signature"),
    ],
)  # fmt: skip
def test_every_bad_tsa_fails_closed(
    hsm: HsmFixture,
    tsa_pki: TsaPki,
    tsas: dict[str, LocalTsa],
    tmp_path: Path,
    mode: str,
    code: str,
    reason: str,
) -> None:
    artifacts = _artifacts(tmp_path, 2)
    exit_code, _, err = _sign(
        hsm, tsa_pki, "--tsa", tsas[mode].url, "--tsa-retries", "0", "--tsa-timeout", "1",
        *artifacts,
    )  # fmt: skip
    assert exit_code == 3, err
    assert f"sealgate: error: [{code}] " in err, err
    assert "no TSA issued a valid timestamp; nothing was written" in err
    assert f"{tsas[mode].url}: " in err and reason in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [a.name for a in artifacts]


def test_one_line_per_tsa_when_none_answers(
    hsm: HsmFixture, tsa_pki: TsaPki, tsas: dict[str, LocalTsa], tmp_path: Path
) -> None:
    [artifact] = _artifacts(tmp_path)
    urls = [tsas["refuse"].url, tsas["rejection"].url, tsas["untrusted"].url]
    code, _, err = _sign(
        hsm, tsa_pki, *(arg for url in urls for arg in ("--tsa", url)), "--tsa-retries", "1",
        artifact,
    )  # fmt: skip
    assert code == 3
    lines = err.splitlines()
    # three different failures: the batch's code says so, each line keeps its own reason
    assert lines[0].startswith("sealgate: error: [tsa-failed] ")
    assert lines[0].endswith(" no TSA issued a valid timestamp; nothing was written:")
    assert [line.split(": ")[0].strip() for line in lines[1:]] == urls
    assert "connection refused (2 attempts)" in lines[1]
    assert not (tmp_path / f"{artifact.name}.p7s").exists()


def test_retries_with_backoff_until_the_tsa_recovers(
    hsm: HsmFixture, tsa_pki: TsaPki, tmp_path: Path
) -> None:
    [artifact] = _artifacts(tmp_path)
    with start_tsa(tsa_pki, "fail_then_ok", failures=2) as flaky:
        too_few = _sign(hsm, tsa_pki, "--tsa", flaky.url, "--tsa-retries", "1", artifact)
        assert too_few[0] == 3 and "HTTP 503 (2 attempts)" in too_few[2]
    with start_tsa(tsa_pki, "fail_then_ok", failures=2) as flaky:
        code, _, err = _sign(hsm, tsa_pki, "--tsa", flaky.url, "--tsa-retries", "2", artifact)
        assert code == 0, err
        assert flaky.request_count == 3


def test_batch_reuses_connections_and_runs_concurrently(
    hsm: HsmFixture, tsa_pki: TsaPki, tmp_path: Path
) -> None:
    artifacts = _artifacts(tmp_path, 40)
    with start_tsa(tsa_pki, "good") as server:
        code, out, err = _sign(
            hsm, tsa_pki, "--tsa", server.url, "--tsa-concurrency", "4", "--json", *artifacts
        )
        assert code == 0, err
        assert server.request_count == 40
        assert 1 <= server.connections <= 4  # pooled: at most one connection per worker
    serials = {entry["timestamp"]["serial"] for entry in json.loads(out)["signed"]}
    assert len(serials) == 40


def test_timestamp_an_existing_signature_later(
    hsm: HsmFixture, tsa_pki: TsaPki, tsas: dict[str, LocalTsa], tmp_path: Path
) -> None:
    [artifact] = _artifacts(tmp_path)
    signed = sealgate(
        "sign",
        "--key",
        hsm.uri("ec384"),
        "--cert",
        hsm.cert_pems["ec384"],
        "--chain",
        hsm.chain_pem,
        artifact,
        env=hsm.env,
    )
    assert signed.returncode == 0, signed.stderr
    p7s = tmp_path / f"{artifact.name}.p7s"
    before = p7s.read_bytes()

    failed = sealgate(
        "timestamp", "--tsa", tsas["wrong_imprint"].url, "--tsa-roots", tsa_pki.root_pem, p7s
    )
    assert failed.returncode == 3
    assert p7s.read_bytes() == before  # untouched when no valid token came

    stamped = sealgate(
        "timestamp", "--tsa", tsas["good"].url, "--tsa-roots", tsa_pki.root_pem, "--json", p7s
    )
    assert stamped.returncode == 0, stamped.stderr
    assert json.loads(stamped.stdout)["timestamped"][0]["signature"] == str(p7s)
    assert openssl_cms_verify(p7s, artifact, hsm.root_pem).returncode == 0
    token, signature = _token_and_signature(p7s)
    assert openssl_ts_verify_token(token, signature, tsa_pki.root_pem).returncode == 0
    # the signed part is byte for byte what was signed
    assert (
        parse_signed_data(before, "before").signed_attrs_der
        == parse_signed_data(p7s.read_bytes(), "after").signed_attrs_der
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tsa", "http://127.0.0.1:1/"], "--tsa-roots is required with --tsa"),
        (["--tsa", "ftp://example/", "--tsa-roots", "X"], "not an http(s) URL"),
    ],
)
def test_tsa_options_are_checked(
    hsm: HsmFixture, tmp_path: Path, args: list[str], message: str
) -> None:
    [artifact] = _artifacts(tmp_path)
    result = sealgate("sign", "--key", hsm.uri("ec256"), *args, artifact, env=hsm.env)
    assert result.returncode == 2
    assert message in result.stderr


def test_tsa_roots_must_be_ca_certificates(
    hsm: HsmFixture, tsa_pki: TsaPki, tmp_path: Path
) -> None:
    [artifact] = _artifacts(tmp_path)
    result = sealgate(
        "sign",
        "--key",
        hsm.uri("ec256"),
        "--tsa",
        "http://127.0.0.1:1/",
        "--tsa-roots",
        tsa_pki.good.cert,
        artifact,
        env=hsm.env,
    )
    assert result.returncode == 2
    assert "is not a CA certificate" in result.stderr


def test_gen_time_outside_the_request_window_is_refused(
    tsa_pki: TsaPki, tsas: dict[str, LocalTsa]
) -> None:
    """A token whose genTime is far from when we asked (a TSA with a broken clock) is not used."""
    import datetime as dt
    import hashlib

    from signer.chain import load_trust_roots
    from signer.errors import VerificationError
    from signer.timestamp import build_request, verify_response
    from tests.components.tsa import post_query

    value = b"signature value"
    nonce = 4242
    answer = post_query(
        tsas["good"].url, build_request(hashlib.sha256(value).digest(), "sha256", nonce)
    )
    roots = load_trust_roots(tsa_pki.root_pem, "--tsa-roots")
    now = dt.datetime.now(dt.UTC)
    token = verify_response(
        answer.content, signed_value=value, nonce=nonce, roots=roots,
        window=(now - dt.timedelta(minutes=1), now), where="response",
    )  # fmt: skip
    assert abs(token.gen_time - now) < dt.timedelta(minutes=1)
    last_year = (now - dt.timedelta(days=365), now - dt.timedelta(days=364))
    with pytest.raises(VerificationError, match="outside the request window"):
        verify_response(
            answer.content, signed_value=value, nonce=nonce, roots=roots, window=last_year,
            where="response",
        )  # fmt: skip


def test_timestamp_refuses_what_is_not_a_signature(
    tsa_pki: TsaPki, tsas: dict[str, LocalTsa], tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus.p7s"
    bogus.write_bytes(b"not a signature")
    result = sealgate(
        "timestamp", "--tsa", tsas["good"].url, "--tsa-roots", tsa_pki.root_pem, bogus
    )
    assert result.returncode == 2
    assert f"{bogus}: malformed CMS signature" in result.stderr
    assert bogus.read_bytes() == b"not a signature"
