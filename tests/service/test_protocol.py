"""The request parser: each malformed body is a typed 4xx naming its field, never a crash."""

from __future__ import annotations

import json

import pytest

from sealgate.service.protocol import ProtocolError, parse_sign_request

ITEM: dict[str, object] = {"name": "a.tgz", "digest_algorithm": "sha256", "digest": "ab" * 32}
GOOD: dict[str, object] = {"key": "release", "artifacts": [ITEM]}


def refused(document: object, code: str, *, status: int = 422, raw: bytes | None = None) -> str:
    body = raw if raw is not None else json.dumps(document).encode()
    with pytest.raises(ProtocolError) as caught:
        parse_sign_request(body, max_artifacts=3)
    assert (caught.value.code, caught.value.status) == (code, status), caught.value.message
    return caught.value.message


def artifact(**fields: object) -> dict[str, object]:
    return {"key": "release", "artifacts": [{**ITEM, **fields}]}


def test_a_good_request_parses() -> None:
    request = parse_sign_request(json.dumps(GOOD).encode())
    assert request.key == "release"
    assert request.artifacts[0].digest == bytes.fromhex("ab" * 32)


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ([], "wrong-type"),
        ({"key": "release"}, "missing-field"),
        ({**GOOD, "approve": True}, "unknown-field"),
        ({**GOOD, "artifacts": []}, "nothing-to-sign"),
        ({**GOOD, "artifacts": {}}, "wrong-type"),
        ({**GOOD, "key": 7}, "wrong-type"),
        ({**GOOD, "key": " "}, "empty-field"),
        ({**GOOD, "key": "k" * 129}, "field-too-long"),
        (artifact(digest_algorithm="md5"), "unknown-digest-algorithm"),
        (artifact(digest="ab" * 31), "digest-length"),
        (artifact(digest_algorithm="sha384"), "digest-length"),
        (artifact(digest="zz" * 32), "bad-digest"),
        (artifact(digest="\u0661\u0662" * 32), "bad-digest"),
        (artifact(extra=1), "unknown-field"),
        (artifact(name="a\ud800"), "bad-unicode"),
        ({**GOOD, "key": "\udfff"}, "bad-unicode"),
    ],
)
def test_malformed_requests_are_refused_by_field(document: object, code: str) -> None:
    refused(document, code)


def test_a_name_given_twice_is_refused() -> None:
    refused({**GOOD, "artifacts": [ITEM, ITEM]}, "duplicate-name")


def test_too_many_artifacts_is_413() -> None:
    items = [{**ITEM, "name": f"a{n}"} for n in range(4)]
    refused({**GOOD, "artifacts": items}, "too-many-artifacts", status=413)


@pytest.mark.parametrize(
    ("raw", "code", "status"),
    [
        (b"{", "malformed-json", 422),
        (b'{"key": NaN}', "malformed-json", 422),
        (b"\xff\xfe", "malformed-json", 422),
        (b"[" * 100_000, "malformed-json", 422),
        (b" " * (1 << 20) + b"{}", "body-too-large", 413),
    ],
)
def test_bodies_that_are_not_json_are_refused(raw: bytes, code: str, status: int) -> None:
    refused(None, code, status=status, raw=raw)
