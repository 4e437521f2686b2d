"""Key URIs resolved through a scheme registry: one module per backend, one line here to add one.

Backends are imported only when their scheme is used, so an optional SDK (boto3) is
needed only by those who sign with that KMS.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from signer.errors import ConfigError
from signer.keys.base import RemoteKey

__all__ = ["RemoteKey", "open_key", "scheme_of"]


class _KeyFactory(Protocol):
    def __call__(self, uri: str) -> RemoteKey: ...


#: URI scheme -> "module:factory". Adding a backend is one line here.
BACKENDS: dict[str, str] = {
    "pkcs11": "signer.keys.pkcs11:Pkcs11Key",
    "hashivault": "signer.keys.hashivault:VaultTransitKey",
    "awskms": "signer.keys.awskms:AwsKmsKey",
}


def scheme_of(uri: str) -> str:
    scheme, sep, _ = uri.partition(":")
    if not sep or not scheme:
        raise ConfigError(
            f"key {uri!r} is not a URI",
            hint=f"use one of {', '.join(s + ':' for s in BACKENDS)} (there is no file-key backend)",
            code="bad-key-uri",
            field="key",
        )
    return scheme.lower()


def open_key(uri: str) -> RemoteKey:
    """Open the key a URI names; unknown schemes are a configuration error (exit 2)."""
    scheme = scheme_of(uri)
    target = BACKENDS.get(scheme)
    if target is None:
        raise ConfigError(
            f"unknown key URI scheme {scheme!r}",
            hint=f"supported: {', '.join(s + ':' for s in BACKENDS)} (there is no file-key backend)",
            code="unknown-key-scheme",
            field="key",
        )
    module_name, _, factory_name = target.partition(":")
    factory: _KeyFactory = getattr(importlib.import_module(module_name), factory_name)
    return factory(uri)
