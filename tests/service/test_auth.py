"""The service's token checks against a real issuer over HTTP: each attack refused with its code
and reason, next to the honest token that passes. Tokens never appear in a message."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealgate.service.auth.identity import Identity
from sealgate.service.auth.jwks import JwksCache
from sealgate.service.auth.tokens import TokenVerifier
from sealgate.service.config import IssuerConfig
from sealgate.service.errors import AuthError, ServiceConfigError
from tests.components.oidc import OidcIssuer, github_claims, gitlab_claims


class Clock:
    """A monotonic clock the test moves by hand (the JWKS refresh interval)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verifier_for(issuer: OidcIssuer, **fields: Any) -> TokenVerifier:
    return TokenVerifier([issuer.config("gh", "github", **fields)])


def refused(verifier: TokenVerifier, token: str, code: str, *, status: int = 401) -> AuthError:
    with pytest.raises(AuthError) as caught:
        verifier.verify(token)
    error = caught.value
    assert error.code == code, error.message
    assert error.status == status
    signature = token.rsplit(".", 1)[-1]
    assert token not in error.message
    assert len(signature) < 8 or signature not in error.message
    return error


# --- the honest tokens ---------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_a_good_github_token_gives_its_normalised_claims(oidc: OidcIssuer, alg: str) -> None:
    identity = verifier_for(oidc).verify(oidc.mint(github_claims(), alg=alg, jti="job-1"))
    assert isinstance(identity, Identity)
    assert identity.issuer_name == "gh" and identity.issuer == oidc.url
    assert identity.provider == "github" and identity.jti == "job-1"
    assert identity.claims["repository_id"] == "123456789"
    assert identity.claims["job_workflow_ref"].endswith("release.yml@refs/heads/main")
    # never sub, and nothing outside DESIGN §6's list (run_id, sha, actor...)
    assert "sub" not in identity.claims and "run_id" not in identity.claims
    assert identity.expires_at is not None and identity.issued_at is not None


def test_a_gitlab_token_normalises_booleans_and_numbers(oidc: OidcIssuer) -> None:
    verifier = TokenVerifier([oidc.config("gl", "gitlab")])
    claims = gitlab_claims(ref_protected=True, project_id=20, environment_protected=False)
    identity = verifier.verify(oidc.mint(claims))
    assert identity.claims["ref_protected"] == "true"
    assert identity.claims["environment_protected"] == "false"
    assert identity.claims["project_id"] == "20"
    assert "runner_id" not in identity.claims and "user_email" not in identity.claims


def test_the_jwks_is_discovered_from_the_issuer(oidc: OidcIssuer) -> None:
    verifier = TokenVerifier([oidc.config("gh", "github", discover=True)])
    assert verifier.verify(oidc.mint(github_claims())).claims["ref"] == "refs/heads/main"
    assert oidc.request_count("discovery") == 1


def test_a_discovery_document_for_another_issuer_is_refused(oidc: OidcIssuer) -> None:
    oidc.override_discovery(issuer=oidc.url + "/")
    verifier = TokenVerifier([oidc.config("gh", "github", discover=True)])
    error = refused(verifier, oidc.mint(github_claims()), "jwks-unavailable", status=503)
    assert "its issuer is" in error.message
    assert oidc.request_count("jwks") == 0


def test_a_redirected_jwks_is_not_followed(oidc: OidcIssuer) -> None:
    with OidcIssuer() as evil:
        oidc.respond("/jwks", 302, headers={"Location": evil.jwks_url})
        error = refused(
            verifier_for(oidc), oidc.mint(github_claims()), "jwks-unavailable", status=503
        )
        assert "HTTP 302" in error.message
        assert evil.request_count("jwks") == 0


def test_an_oversized_jwks_is_refused(oidc: OidcIssuer) -> None:
    oidc.respond("/jwks", 200, b'{"keys": [' + b" " * (300 * 1024) + b"]}")
    error = refused(verifier_for(oidc), oidc.mint(github_claims()), "jwks-unavailable", status=503)
    assert "bytes" in error.message


# --- audience ------------------------------------------------------------------------------------
def test_a_wrong_audience_is_refused(oidc: OidcIssuer) -> None:
    error = refused(
        verifier_for(oidc), oidc.mint(github_claims(), audience="other"), "token-audience"
    )
    assert "'sealgate-test'" in error.message and error.field == "aud"


@pytest.mark.parametrize("audience", ["https://github.com/octo-org", "ISSUER"])
def test_the_providers_default_audience_is_refused(oidc: OidcIssuer, audience: str) -> None:
    audience = oidc.url if audience == "ISSUER" else audience
    error = refused(
        verifier_for(oidc), oidc.mint(github_claims(), audience=audience), "token-audience"
    )
    assert "default audience" in error.message


@pytest.mark.parametrize(
    "audience", ["https://github.com/octo-org", "https://GitHub.com/octo-org/", "ISSUER"]
)
def test_the_providers_default_audience_cannot_be_configured(
    oidc: OidcIssuer, audience: str
) -> None:
    audience = oidc.url if audience == "ISSUER" else audience
    with pytest.raises(ServiceConfigError) as caught:
        verifier_for(oidc, audience=audience)
    assert caught.value.code == "default-audience" and caught.value.exit_code == 2


def test_the_gitlab_instance_url_cannot_be_the_audience(oidc: OidcIssuer) -> None:
    with pytest.raises(ServiceConfigError) as caught:
        TokenVerifier([oidc.config("gl", "gitlab", audience="http://127.0.0.1")])
    assert "GitLab instance URL" in caught.value.message


def test_an_audience_list_with_anything_else_in_it_is_refused(oidc: OidcIssuer) -> None:
    verifier = verifier_for(oidc)
    token = oidc.mint(github_claims(), audience=["sealgate-test", "https://github.com/octo-org"])
    assert "a list of 2 values" in refused(verifier, token, "token-audience").message
    # the honest control: the one audience alone, as a list of one
    assert verifier.verify(oidc.mint(github_claims(), audience=["sealgate-test"])).jti


def test_a_token_without_an_audience_is_refused(oidc: OidcIssuer) -> None:
    error = refused(
        verifier_for(oidc), oidc.mint(github_claims(), audience=None), "token-claim-missing"
    )
    assert error.field == "aud"


# --- time ----------------------------------------------------------------------------------------
def test_an_expired_token_is_refused_and_the_leeway_is_at_most_30_s(oidc: OidcIssuer) -> None:
    now = int(time.time())
    verifier = verifier_for(oidc)
    expired = oidc.mint(github_claims(), iat=now - 200, lifetime=200 - 60)
    assert refused(verifier, expired, "token-expired").field == "exp"
    # 10 s past exp is inside the 30 s leeway: the honest clock-skew case passes
    assert verifier.verify(oidc.mint(github_claims(), iat=now - 200, lifetime=190)).jti


def test_a_leeway_over_30_s_is_a_configuration_error(oidc: OidcIssuer) -> None:
    with pytest.raises(ServiceConfigError) as caught:
        verifier_for(oidc, leeway=300)
    assert caught.value.code == "bad-leeway"


def test_a_future_nbf_or_iat_is_refused(oidc: OidcIssuer) -> None:
    now = int(time.time())
    verifier = verifier_for(oidc)
    error = refused(verifier, oidc.mint(github_claims(), nbf=now + 120), "token-not-yet-valid")
    assert error.field == "nbf"
    error = refused(verifier, oidc.mint(github_claims(), iat=now + 120), "token-not-yet-valid")
    assert error.field == "iat"


def test_a_token_too_old_is_refused_even_before_it_expires(oidc: OidcIssuer) -> None:
    now = int(time.time())
    verifier = verifier_for(oidc, max_token_age=600)
    old = oidc.mint(github_claims(), iat=now - 700, lifetime=3600)
    assert "issued 7" in refused(verifier, old, "token-too-old").message
    assert verifier.verify(oidc.mint(github_claims(), iat=now - 500, lifetime=3600)).jti


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "jti", "iss"])
def test_each_required_claim_is_required(oidc: OidcIssuer, claim: str) -> None:
    verifier = verifier_for(oidc)
    token = oidc.mint({**github_claims(), claim: None})
    code = "token-issuer" if claim == "iss" else "token-claim-missing"
    error = refused(verifier, token, code)
    assert error.field == claim


@pytest.mark.parametrize("exp", [10**12, 2**63, 10**30, 1e300])
def test_an_absurd_exp_is_refused_not_a_crash(oidc: OidcIssuer, exp: float) -> None:
    token = oidc.mint({**github_claims(), "exp": exp})
    assert "not a usable time" in refused(verifier_for(oidc), token, "token-malformed").message


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_a_time_claim_as_a_string_is_refused(oidc: OidcIssuer, claim: str) -> None:
    now = int(time.time())
    values = {"exp": now + 300, "iat": now, "nbf": now}
    token = oidc.mint({**github_claims(), claim: str(values[claim])})
    refused(verifier_for(oidc), token, "token-malformed")


def test_a_lone_surrogate_in_the_jti_or_a_claim_is_refused(oidc: OidcIssuer) -> None:
    """JSON's "\\ud800" decodes to half a character that no database, canonical JSON or log
    line can hold: refused as the token's fault (401), never a crash of the audit append (5xx)."""
    token = oidc.mint({**github_claims(), "jti": "a\ud800b"})
    assert refused(verifier_for(oidc), token, "token-malformed").field == "jti"
    token = oidc.mint(github_claims(ref="refs/heads/\udc00main"))
    assert refused(verifier_for(oidc), token, "token-claim-invalid").field == "ref"


@pytest.mark.parametrize("jti", ["", "   ", "x" * 300])
def test_an_empty_or_huge_jti_is_refused(oidc: OidcIssuer, jti: str) -> None:
    token = oidc.mint({**github_claims(), "jti": jti})
    error = refused(
        verifier_for(oidc), token, "token-claim-missing" if not jti else "token-malformed"
    )
    assert error.field == "jti"


# --- algorithms and keys -------------------------------------------------------------------------
def test_alg_none_is_refused_before_any_key_lookup(oidc: OidcIssuer) -> None:
    for alg in ("none", "None", "NONE"):
        token = oidc.mint(github_claims(), alg=alg, kid=oidc.kid())
        assert (
            "only public-key signatures"
            in refused(verifier_for(oidc), token, "token-algorithm").message
        )
    assert oidc.request_count("jwks") == 0


def test_hs256_signed_with_the_public_key_as_secret_is_refused(oidc: OidcIssuer) -> None:
    public = oidc.private_key("RS256").public_key()
    for encoding, fmt in [
        (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        (serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    ]:
        secret = public.public_bytes(encoding, fmt)
        for alg in ("HS256", "HS384", "HS512"):
            token = oidc.mint(github_claims(), alg=alg, kid=oidc.kid(), key=secret)
            refused(verifier_for(oidc), token, "token-algorithm")
    assert oidc.request_count("jwks") == 0


def test_an_oct_key_in_the_jwks_is_never_used(oidc: OidcIssuer) -> None:
    secret = b"s" * 32
    oidc.publish({"kty": "oct", "kid": "hmac", "k": jwt.utils.base64url_encode(secret).decode()})
    verifier = verifier_for(oidc, algorithms=("RS256", "ES256"))
    refused(
        verifier, oidc.mint(github_claims(), alg="HS256", kid="hmac", key=secret), "token-algorithm"
    )
    # RS256 naming the oct key's kid: the kid is not among the signing keys at all
    token = oidc.mint(github_claims(), kid="hmac")
    refused(verifier, token, "token-unknown-key")


def test_an_algorithm_the_issuer_does_not_allow_is_refused(oidc: OidcIssuer) -> None:
    verifier = verifier_for(oidc, algorithms=("RS256",))
    error = refused(verifier, oidc.mint(github_claims(), alg="ES256"), "token-algorithm")
    assert "issuer 'gh' allows (RS256)" in error.message


def test_a_key_is_only_used_with_its_own_algorithm(oidc: OidcIssuer) -> None:
    verifier = verifier_for(oidc, algorithms=("RS256", "ES256", "PS256"))
    # an RS256 header naming the EC key's kid (signed with the RSA key)
    token = oidc.mint(github_claims(), alg="RS256", kid=oidc.kid("ES256"))
    assert "EC key" in refused(verifier, token, "token-algorithm").message
    # PS256 with the RSA key, whose JWK says alg RS256
    token = oidc.mint(github_claims(), alg="PS256", kid=oidc.kid("RS256"))
    assert "is for RS256" in refused(verifier, token, "token-algorithm").message


def test_a_foreign_key_under_the_issuers_kid_fails_the_signature(oidc: OidcIssuer) -> None:
    foreign = rsa.generate_private_key(65537, 2048)
    token = oidc.mint(github_claims(), kid=oidc.kid(), key=foreign)
    refused(verifier_for(oidc), token, "token-signature")
    foreign_ec = ec.generate_private_key(ec.SECP256R1())
    token = oidc.mint(github_claims(), alg="ES256", key=foreign_ec)
    refused(verifier_for(oidc), token, "token-signature")


def test_a_tampered_payload_fails_the_signature(oidc: OidcIssuer) -> None:
    header, _payload, signature = oidc.mint(github_claims()).split(".")
    evil = oidc.mint(github_claims(repository_id="666")).split(".")[1]
    refused(verifier_for(oidc), f"{header}.{evil}.{signature}", "token-signature")


@pytest.mark.parametrize("where", ["jku", "x5u", "jwk"])
def test_key_headers_are_ignored_the_jwks_alone_says_the_keys(oidc: OidcIssuer, where: str) -> None:
    with OidcIssuer() as evil:
        pointers: dict[str, Any] = {
            "jku": evil.jwks_url,
            "x5u": evil.jwks_url,
            "jwk": evil.jwks()["keys"][0],
        }
        token = oidc.mint(
            github_claims(),
            kid=evil.kid(),
            key=evil.private_key(),
            headers={where: pointers[where]},
        )
        refused(verifier_for(oidc), token, "token-unknown-key")
        assert evil.request_count("jwks") == 0


@pytest.mark.parametrize(
    "headers", [{"crit": ["exp"]}, {"crit": ["b64"], "b64": False}, {"b64": True}]
)
def test_jws_extensions_are_refused(oidc: OidcIssuer, headers: dict[str, Any]) -> None:
    token = oidc.mint(github_claims(), headers=headers)
    assert refused(verifier_for(oidc), token, "token-header").field in {"crit", "b64"}


def test_kid_confusion_between_issuers(oidc: OidcIssuer) -> None:
    """Issuer B publishes a key under issuer A's kid; a token claiming A, signed with B's key,
    is checked against A's keys only."""
    with OidcIssuer() as other:
        attacker = rsa.generate_private_key(65537, 2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key()))
        other.publish({**jwk, "kid": oidc.kid(), "alg": "RS256"})
        verifier = TokenVerifier([oidc.config("a", "github"), other.config("b", "gitlab")])
        token = oidc.mint(github_claims(), kid=oidc.kid(), key=attacker)
        refused(verifier, token, "token-signature")
        # B's own token for B passes (control), and says issuer b
        assert verifier.verify(other.mint(gitlab_claims())).issuer_name == "b"
        # a token claiming iss A signed by B's real key: B's kid is unknown to A
        token = oidc.mint(github_claims(), kid=other.kid(), key=other.private_key())
        refused(verifier, token, "token-unknown-key")


@pytest.mark.parametrize("variant", ["slash", "case", "prefix", "unknown"])
def test_the_issuer_is_matched_exactly(oidc: OidcIssuer, variant: str) -> None:
    iss = {
        "slash": oidc.url + "/",
        "case": oidc.url.upper(),
        "prefix": oidc.url + "/evil",
        "unknown": "https://token.actions.githubusercontent.com",
    }[variant]
    error = refused(verifier_for(oidc), oidc.mint({**github_claims(), "iss": iss}), "token-issuer")
    assert "not one this service trusts" in error.message
    assert oidc.request_count("jwks") == 0


def test_a_duplicate_kid_in_the_jwks_is_left_out(oidc: OidcIssuer) -> None:
    other = rsa.generate_private_key(65537, 2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(other.public_key()))
    oidc.publish({**jwk, "kid": oidc.kid(), "alg": "RS256"})
    refused(verifier_for(oidc), oidc.mint(github_claims()), "token-unknown-key")
    # the EC key, listed once, still works
    assert verifier_for(oidc).verify(oidc.mint(github_claims(), alg="ES256")).jti


# --- the JWKS cache ------------------------------------------------------------------------------
def test_an_unknown_kid_refreshes_and_then_the_rotated_keys_verify(oidc: OidcIssuer) -> None:
    clock = Clock()
    cache = JwksCache(oidc.jwks_url, 60.0, issuer=oidc.url, clock=clock)
    verifier = TokenVerifier([oidc.config("gh", "github")], caches={"gh": cache})
    assert verifier.verify(oidc.mint(github_claims())).jti
    refused(verifier, oidc.mint(github_claims(), kid="made-up"), "token-unknown-key")
    clock.now += 61
    oidc.rotate()
    assert verifier.verify(oidc.mint(github_claims())).jti  # the new kid: one refresh
    assert oidc.request_count("jwks") == 2


def test_unknown_kid_refreshes_are_rate_limited(oidc: OidcIssuer) -> None:
    clock = Clock()
    cache = JwksCache(oidc.jwks_url, 60.0, issuer=oidc.url, clock=clock)
    verifier = TokenVerifier([oidc.config("gh", "github")], caches={"gh": cache})
    assert verifier.verify(oidc.mint(github_claims())).jti
    for n in range(20):
        refused(verifier, oidc.mint(github_claims(), kid=f"flood-{n}"), "token-unknown-key")
    assert oidc.request_count("jwks") == 1
    clock.now += 60
    refused(verifier, oidc.mint(github_claims(), kid="flood-again"), "token-unknown-key")
    refused(verifier, oidc.mint(github_claims(), kid="flood-again-2"), "token-unknown-key")
    assert oidc.request_count("jwks") == 2


def test_a_jwks_outage_keeps_the_old_keys(oidc: OidcIssuer) -> None:
    clock = Clock()
    cache = JwksCache(oidc.jwks_url, 10.0, issuer=oidc.url, max_age=10.0, clock=clock)
    verifier = TokenVerifier([oidc.config("gh", "github")], caches={"gh": cache})
    assert verifier.verify(oidc.mint(github_claims())).jti
    oidc.fail_jwks(True)
    clock.now += 11  # past max_age: the known kid triggers a refresh, which fails
    assert verifier.verify(oidc.mint(github_claims())).jti
    assert oidc.request_count("jwks") == 2
    clock.now += 11
    # an unknown kid while the issuer is down: 503 (retry later), not "no such key"
    error = refused(verifier, oidc.mint(github_claims(), kid="new"), "jwks-unavailable", status=503)
    assert "HTTP 500" in error.message
    assert verifier.verify(oidc.mint(github_claims(), alg="ES256")).jti


def test_a_withdrawn_key_stops_verifying_after_max_age(oidc: OidcIssuer) -> None:
    clock = Clock()
    cache = JwksCache(oidc.jwks_url, 10.0, issuer=oidc.url, max_age=100.0, clock=clock)
    verifier = TokenVerifier([oidc.config("gh", "github")], caches={"gh": cache})
    old_key, old_kid = oidc.private_key(), oidc.kid()
    assert verifier.verify(oidc.mint(github_claims())).jti
    oidc.rotate()
    token = oidc.mint(github_claims(), kid=old_kid, key=old_key)
    assert verifier.verify(token).jti  # still cached: inside max_age
    clock.now += 101
    refused(verifier, oidc.mint(github_claims(), kid=old_kid, key=old_key), "token-unknown-key")


def test_an_issuer_down_from_the_start_is_503_and_recovers(oidc: OidcIssuer) -> None:
    clock = Clock()
    cache = JwksCache(oidc.jwks_url, 60.0, issuer=oidc.url, clock=clock)
    verifier = TokenVerifier([oidc.config("gh", "github")], caches={"gh": cache})
    oidc.fail_jwks(True)
    refused(verifier, oidc.mint(github_claims()), "jwks-unavailable", status=503)
    refused(verifier, oidc.mint(github_claims()), "jwks-unavailable", status=503)
    assert oidc.request_count("jwks") == 1  # retried at most every 5 s, even while empty
    oidc.fail_jwks(False)
    clock.now += 5
    assert verifier.verify(oidc.mint(github_claims())).jti


def test_many_threads_on_a_cold_cache_fetch_once(oidc: OidcIssuer) -> None:
    verifier = verifier_for(oidc)
    tokens = [oidc.mint(github_claims(), alg="ES256" if n % 2 else "RS256") for n in range(64)]
    failures: list[BaseException] = []

    def work(part: list[str]) -> None:
        try:
            for token in part:
                verifier.verify(token)
        except BaseException as exc:  # the assertion below reports it
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(tokens[n::8],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures and not any(thread.is_alive() for thread in threads)
    assert oidc.request_count("jwks") == 1


# --- malformed and hostile shapes ----------------------------------------------------------------
@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c", "a.b.c.d", "e30.e30.", "!!!.???.***", "x" * 20000],
)
def test_malformed_tokens_are_refused(oidc: OidcIssuer, token: str) -> None:
    with pytest.raises(AuthError) as caught:
        verifier_for(oidc).verify(token)
    assert caught.value.code in {"token-malformed", "token-algorithm"}
    assert caught.value.status == 401


def test_a_header_without_a_kid_is_refused(oidc: OidcIssuer) -> None:
    token = oidc.mint(github_claims(), headers={"kid": None})
    assert refused(verifier_for(oidc), token, "token-unknown-key").field == "kid"


@pytest.mark.parametrize("value", [["refs/heads/main"], {"ref": "refs/heads/main"}, 1.5])
def test_a_claim_of_an_unexpected_type_is_refused(oidc: OidcIssuer, value: object) -> None:
    token = oidc.mint(github_claims(ref=value))
    error = refused(verifier_for(oidc), token, "token-claim-invalid")
    assert error.field == "ref"


def test_a_huge_claim_is_refused(oidc: OidcIssuer) -> None:
    token = oidc.mint(github_claims(environment="e" * 2000))
    assert "2000 characters" in refused(verifier_for(oidc), token, "token-claim-invalid").message


def test_a_hostile_issuer_value_is_escaped_in_the_message(oidc: OidcIssuer) -> None:
    token = oidc.mint({**github_claims(), "iss": "evil\n::error::forged\x1b[31m"})
    error = refused(verifier_for(oidc), token, "token-issuer")
    assert "\n" not in error.message and "\x1b" not in error.message


def test_an_hmac_algorithm_cannot_be_configured(oidc: OidcIssuer) -> None:
    with pytest.raises(ServiceConfigError) as caught:
        TokenVerifier([IssuerConfig("x", "github", oidc.url, "aud", algorithms=("RS256", "HS256"))])
    assert caught.value.code == "bad-algorithms"


def test_a_short_rsa_key_in_the_jwks_is_not_trusted(oidc: OidcIssuer) -> None:
    small = rsa.generate_private_key(65537, 1024)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(small.public_key()))
    oidc.publish({**jwk, "kid": "small", "alg": "RS256"})
    token = oidc.mint(github_claims(), kid="small", key=small)
    assert "1024 bits" in refused(verifier_for(oidc), token, "token-weak-key").message


def test_a_slow_drip_jwks_meets_the_fetch_deadline(oidc: OidcIssuer) -> None:
    """A JWKS sent a byte at a time (the whole of it valid) is given up on at the deadline,
    not read to its end: one request thread is not the issuer's to hold."""
    body = json.dumps(oidc.jwks()).encode()
    oidc.respond("/jwks", 200, body, {"Content-Type": "application/json"}, drip=0.05)
    cache = JwksCache(oidc.jwks_url, 60.0, 0.5, issuer=oidc.url)
    verifier = TokenVerifier([oidc.config("gh", "github")], caches={"gh": cache})
    error = refused(verifier, oidc.mint(github_claims()), "jwks-unavailable", status=503)
    assert "not read within 0.5 s" in error.message
    # the client hung up mid-body: the server never got the whole document out
    for _ in range(200):
        if oidc.dripped:
            break
        time.sleep(0.05)
    assert oidc.dripped and oidc.dripped[0] < len(body)


def test_warming_reads_every_issuer_and_reports_the_ones_down(oidc: OidcIssuer) -> None:
    with OidcIssuer() as down:
        down.fail_jwks(True)
        verifier = TokenVerifier([oidc.config("a", "github"), down.config("b", "gitlab")])
        failures = verifier.warm()
        assert [f.code for f in failures] == ["jwks-unavailable"]
        assert down.jwks_url in failures[0].message
        assert oidc.request_count("jwks") == 1
        # warmed: the first token needs no fetch of its own
        assert verifier.verify(oidc.mint(github_claims())).jti
        assert oidc.request_count("jwks") == 1


# --- hypothesis: whatever a signed token says, the answer is a typed refusal or an Identity ----
NOW = int(time.time())
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
#: times near now, far in the future (past what a datetime holds), or any JSON at all
TIME = st.integers(NOW - 2000, NOW + 2000) | st.integers(NOW, 2**70) | st.floats(0) | JSON
#: one or two claims changed at a time, so that each hostile value gets past the others
CHANGES = st.lists(
    st.tuples(st.sampled_from(["exp", "iat", "nbf"]), TIME)
    | st.tuples(
        st.sampled_from(["jti", "aud", "iss", "ref", "repository_id", "event_name",
                         "runner_environment", "sub"]),
        JSON,
    ),
    min_size=1, max_size=2,
).map(dict)  # fmt: skip
HEADERS = st.dictionaries(
    st.sampled_from(["typ", "kid", "alg", "cty", "x5t", "zip"]), JSON, max_size=2
)
FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.slow
@FUZZ
@given(changes=CHANGES, headers=HEADERS)
def test_any_signed_claims_give_an_identity_or_a_typed_refusal(
    oidc: OidcIssuer, changes: dict[str, Any], headers: dict[str, Any]
) -> None:
    try:
        token = oidc.mint({**github_claims(), **changes}, headers=headers)
    except (TypeError, ValueError, KeyError, NotImplementedError):
        return  # the test issuer itself cannot sign that header (alg not a string...)
    try:
        identity = verifier_for(oidc).verify(token)
    except AuthError as exc:
        assert exc.status in {401, 503} and exc.code.startswith(("token-", "jwks-"))
        assert token not in exc.message
        return
    assert all(isinstance(v, str) for v in identity.claims.values())
    assert identity.expires_at is not None and identity.issued_at is not None


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_any_bearer_string_is_a_typed_refusal(oidc: OidcIssuer, token: str) -> None:
    with pytest.raises(AuthError):
        verifier_for(oidc).verify(token)


def test_deeply_nested_json_is_refused_not_a_crash(oidc: OidcIssuer) -> None:
    deep_header = jwt.utils.base64url_encode(b"[" * 10000).decode()
    refused(verifier_for(oidc), f"{deep_header}.e30.sig", "token-malformed")
    oidc.respond("/jwks", 200, b"[" * 100_000)
    error = refused(verifier_for(oidc), oidc.mint(github_claims()), "jwks-unavailable", status=503)
    assert "not JSON" in error.message
