"""The release stages: sign (through the HSM/KMS, or the signing service with the job's OIDC
token), verify (what was just signed, as the gate will) and attest (a DSSE-signed SLSA VSA about
the signed artifacts)."""

from __future__ import annotations

import os
from pathlib import Path

from integrity.artifacts import match_artifacts
from integrity.attestation import CHECK_LEVEL, vsa_statement
from sealgate.attest import subject_digest, subject_name, write_attestation
from sealgate.pipeline.prepare import Prepared
from sealgate.pipeline.report import PASSED, Stage
from sealgate.pipeline.source import StageContext
from sealgate.service.client import Trust, sign_remote
from sealgate.service.idtoken import TokenSource
from signer.keys import open_key
from signer.sign import SIGNATURE_SUFFIX, sign_artifacts
from signer.verify import verify_artifact


class ReleaseStages(StageContext):
    """Signing and what is proven about the signatures."""

    def _sign(self, stage: Stage, prepared: Prepared) -> bool:
        artifacts = match_artifacts(
            self.root, self.config["artifacts"], exclude_suffixes=(SIGNATURE_SUFFIX,)
        )
        if self.config["attest"]:  # the VSA must be able to name each one: known before signing
            for path in artifacts:
                subject_name(self.root, path, field="artifacts")
        if self.config["service"]:
            return self._sign_remote(stage, prepared, artifacts)
        with open_key(self.config["key"]) as key:
            self.result.key = key.display_uri
            self.result.signed = sign_artifacts(key, artifacts, prepared.sign_options)
        stamped = " and timestamped" if prepared.tsa else ""
        stage.summary = (
            f"{len(self.result.signed)} artifact(s) signed{stamped} with {self.result.key}"
        )
        stage.details = {"signatures": [str(s.signature) for s in self.result.signed]}
        return True

    def _sign_remote(self, stage: Stage, prepared: Prepared, artifacts: list[Path]) -> bool:
        """Digests to the service, `.p7s` back, each checked against our digest (and the verify
        stage's roots) before any is written: no key, PIN or certificate in the job."""
        policy = prepared.verify_policy
        trust = Trust(
            roots=policy.trust_roots if policy else (),
            tsa_roots=policy.tsa_roots if policy else (),
            tsa_certs=policy.tsa_certs if policy else (),
        )
        service: str = self.config["service"]
        source = TokenSource(
            self.config["service_audience"] or service.rstrip("/"),
            os.environ,
            self.config["id_token_var"],
        )
        remote = sign_remote(
            service, self.config["service_key"], artifacts, token_source=source, trust=trust
        )
        self.result.key = f"{remote.service} key {remote.key!r} version {remote.key_version}"
        self.result.signed = remote.signed
        stamped = " and timestamped" if any(s.timestamp for s in remote.signed) else ""
        stage.summary = (
            f"{len(remote.signed)} artifact(s) signed{stamped} by the signing service "
            f"{self.result.key}; audit record {remote.receipt.index}"
        )
        stage.details = {
            "signatures": [str(s.signature) for s in remote.signed],
            "receipts": [str(r) for r in remote.receipts],
            "request_id": remote.request_id,
        }
        return True

    def _verify(self, stage: Stage, prepared: Prepared) -> bool:
        assert prepared.verify_policy is not None  # noqa: S101 - prepare() made it
        self.result.verdicts = [
            verify_artifact(s.artifact, prepared.verify_policy) for s in self.result.signed
        ]
        failed = [v for v in self.result.verdicts if not v.verified]
        stage.code = next((v.code for v in failed if v.code), None)
        stage.reasons = [f"{v.artifact}: {v.reason}" for v in failed]
        stage.annotations = [(str(v.artifact), str(v.reason)) for v in failed]
        stage.summary = f"{len(self.result.verdicts) - len(failed)} verified, {len(failed)} failed"
        return not failed

    def _attest(self, stage: Stage) -> bool | None:
        stages = self.result.stages
        check = (
            "watch"
            if stages["watch"].status == PASSED
            else "tree"
            if stages["tree"].status == PASSED
            else "commits"
            if stages["commits"].status == PASSED
            else None
        )
        if check is None:
            stage.summary = "no integrity check ran: nothing to attest"
            return None
        if not self.config["attest_key"]:  # signed by the service: no local key for the VSA
            stage.summary = "no attestation key (the service signed the artifacts; --attest-key)"
            return None
        levels = [
            CHECK_LEVEL[n] for n in ("commits", "tree", "watch") if stages[n].status == PASSED
        ]
        commit = self.result.commit or ""
        statement = vsa_statement(
            check=check,
            commit=commit,
            resource_uri=f"git+file://{self.root}@{commit}",
            subjects=[
                (subject_name(self.root, s.artifact, field="artifacts"), subject_digest(s.artifact))
                for s in self.result.signed
            ],
            policy_uri=None,
            policy_digest=None,
            passed=True,
            levels=levels,
        )
        out: Path = self.config["attestation"]
        out.parent.mkdir(exist_ok=True)  # the last level only; prepare() checked the rest
        write_attestation(self.config["attest_key"], statement, out)
        self.result.attestation = out
        stage.summary = f"VSA ({check}: {', '.join(levels)}) written to {out}"
        return True
