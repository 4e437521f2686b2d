"""A local SoftHSM2 token: the embedded default HSM of the demo, and the tests' real HSM.

Keys are generated inside the token (they never exist outside it); the token directory,
its configuration and a PIN file live in one folder that the caller owns.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from sealgate.errors import SealgateError

SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
_CURVES = {"ec-p256": "secp256r1", "ec-p384": "secp384r1"}
KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519")


def softhsm_module() -> str | None:
    return next((p for p in SOFTHSM_MODULE_CANDIDATES if Path(p).is_file()), None)


@dataclass
class SoftHsmToken:
    """One initialised token in its own directory; `env` must be in the environment of its users."""

    home: Path
    label: str
    module: str
    pin_file: Path

    @property
    def conf(self) -> Path:
        return self.home / "softhsm2.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf)}

    @classmethod
    def create(cls, home: Path, label: str = "sealgate") -> SoftHsmToken:
        """Initialise a fresh token with a random user PIN kept in `home/user.pin` (mode 0600)."""
        module = softhsm_module()
        util = shutil.which("softhsm2-util")
        if module is None or util is None:
            raise SealgateError(
                "SoftHSM2 is not installed", hint="apt-get install softhsm2 opensc", exit_code=3
            )
        tokens = home / "tokens"
        tokens.mkdir(parents=True, exist_ok=True)
        (home / "softhsm2.conf").write_text(
            f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        )
        pin_file = home / "user.pin"
        pin = secrets.token_hex(8)
        pin_file.touch(mode=0o600)
        pin_file.write_text(pin)
        token = cls(home=home, label=label, module=module, pin_file=pin_file)
        result = subprocess.run(  # noqa: S603 - fixed tool, arguments we built
            [
                util,
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                secrets.token_hex(8),
                "--pin",
                pin,
            ],
            env={**os.environ, **token.env},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SealgateError(
                f"softhsm2-util could not initialise token {label!r}: "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return token

    def uri(self, key_label: str, *, with_pin: bool = True) -> str:
        """The pkcs11: URI of a key in this token (PIN by file, never inline)."""
        query = f"module-path={self.module}"
        if with_pin:
            query += f"&pin-source=file:{self.pin_file}"
        return f"pkcs11:token={self.label};object={key_label}?{query}"

    def _session(self) -> Any:
        os.environ.update(self.env)  # SoftHSM reads its configuration when the module initialises
        library = pkcs11.lib(self.module)
        try:
            token = library.get_token(token_label=self.label)
        except pkcs11.NoSuchToken:
            library.reinitialize()  # the token was created after the module was loaded
            token = library.get_token(token_label=self.label)
        return token.open(user_pin=self.pin_file.read_text(), rw=True)

    def generate(
        self, key_label: str, key_type: str = "ec-p256", key_id: bytes | None = None
    ) -> None:
        """Generate a key pair inside the token; the private half is sensitive and never extractable."""
        key_id = key_id if key_id is not None else secrets.token_bytes(4)
        private_template = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False}
        with self._session() as session:
            if key_type in _CURVES:
                params = session.create_domain_parameters(
                    KeyType.EC,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVES[key_type])},
                    local=True,
                )
                params.generate_keypair(
                    store=True, label=key_label, id=key_id, private_template=private_template
                )
            elif key_type.startswith("rsa-"):
                session.generate_keypair(
                    KeyType.RSA,
                    int(key_type[4:]),
                    store=True,
                    label=key_label,
                    id=key_id,
                    private_template=private_template,
                )
            elif key_type == "ed25519":
                params = session.create_domain_parameters(
                    KeyType.EC_EDWARDS,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters("1.3.101.112")},
                    local=True,
                )
                params.generate_keypair(
                    store=True,
                    label=key_label,
                    id=key_id,
                    mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                    private_template=private_template,
                )
            else:
                raise SealgateError(
                    f"unknown key type {key_type!r}: use one of {', '.join(KEY_TYPES)}"
                )

    def store_certificate(self, key_label: str, cert: x509.Certificate) -> None:
        """Put the certificate beside its key (same label and id), as HSM vendors' tools do."""
        with self._session() as session:
            private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key_label)
            session.create_object(
                {
                    Attribute.CLASS: ObjectClass.CERTIFICATE,
                    Attribute.CERTIFICATE_TYPE: pkcs11.CertificateType.X_509,
                    Attribute.TOKEN: True,
                    Attribute.LABEL: key_label,
                    Attribute.ID: private[Attribute.ID],
                    Attribute.SUBJECT: cert.subject.public_bytes(),
                    Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
                }
            )
