"""schemathesis against the service's own OpenAPI description, through the ASGI app: for every
generated request (valid and invalid bodies, parameters, with and without a valid token), no
5xx, and every answer matches the status codes, content types and schemas the description
declares. The body is parsed by our parser, not by pydantic, so this holds the two together."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sealgate.service.config import AuditConfig
from sealgate.service.protocol import SIGN_REQUEST_SCHEMA
from tests.components.hsm import HsmFixture
from tests.components.oidc import OidcIssuer
from tests.components.service import (
    KEY,
    InProcessService,
    hsm_key,
    in_process_service,
    service_config,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Examples per operation and generation mode: the run stays well under a minute.
EXAMPLES = 25


@pytest.fixture
def fuzzed(hsm: HsmFixture, oidc: OidcIssuer, tmp_path: Path) -> Iterator[InProcessService]:
    """The app over a real key without a TSA (the fuzz is about the HTTP face, and fast)."""
    config = service_config(oidc, [hsm_key(hsm)], directory=tmp_path,
                            audit=AuditConfig(key_uri=hsm.uri("ed25519"), checkpoint_every=5))  # fmt: skip
    with in_process_service(config, oidc) as service:
        yield service


def test_the_description_declares_the_protocol_s_schemas(fuzzed: InProcessService) -> None:
    document = fuzzed.client.get("/openapi.json").json()
    sign = document["paths"]["/v1/sign"]["post"]
    body = sign["requestBody"]["content"]["application/json"]["schema"]
    assert body == json.loads(json.dumps(SIGN_REQUEST_SCHEMA))
    assert {"200", "401", "403", "404", "413", "422", "429", "503"} <= set(sign["responses"])
    assert sign["security"] == [{"bearer": []}]
    for path in ("/v1/audit/checkpoint", "/v1/audit/proof/{index}", "/v1/audit/consistency"):
        assert path in document["paths"]


def _reachable(body: dict[str, Any]) -> dict[str, Any]:
    """Our key, and SHA-256 digests of 32 bytes (the schema allows 32 to 64 bytes for any
    algorithm), so generated requests also get signed, not only refused."""
    body["key"] = KEY
    for number, item in enumerate(body.get("artifacts") or []):
        if isinstance(item, dict) and "digest" in item:
            item["digest_algorithm"] = "sha256"  # what the EC P-256 key signs
            item["digest"] = (str(item["digest"]) + "ab" * 32)[:64]
            item["name"] = f"artifact-{number}"
    return body


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_5xx_or_an_undeclared_answer(
    fuzzed: InProcessService, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed.service.app)
    seen: dict[str, set[int]] = {}
    answered: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err raises here, as it should
        strategy = operation.as_strategy(generation_mode=mode)

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=strategy, token=st.sampled_from(["valid", "none", "garbage"]),
               our_key=st.booleans())  # fmt: skip
        def run(case: Any, token: str, our_key: bool) -> None:
            if our_key and isinstance(case.body, dict) and "key" in case.body:
                case.body = _reachable(copy.deepcopy(case.body))  # the grant, HSM and append too
            headers = {
                "valid": {"Authorization": f"Bearer {fuzzed.token()}"},
                "garbage": {"Authorization": "Bearer a.b.c"},
                "none": {},
            }[token]
            response = case.call(headers=headers)
            label = case.operation.label
            seen.setdefault(label, set()).add(response.status_code)
            if label == "POST /v1/sign":
                answered.append(response.status_code)
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid (no parameters, no body): not fuzzed
            assert mode is GenerationMode.NEGATIVE and operation.method == "get", operation.label
    sign = seen["POST /v1/sign"]
    assert 401 in sign and (422 in sign or 404 in sign), seen
    if mode is GenerationMode.POSITIVE:
        assert 200 in sign, seen  # the run reached the HSM, not only the refusals
    # every /v1/sign outcome was recorded once: as many records as sign requests answered
    assert len(fuzzed.records()) == len(answered)
