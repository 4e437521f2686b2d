"""URLs as they may be shown: without user information and without secret-looking query values.

Credentials belong beside a URL (headers, environment), but users paste them into it anyway
(`https://user:pass@tsa/`, `?token=...`); every message, report and summary shows this form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

#: Query parameters whose value is a secret in the services Sealgate talks to.
SECRET_PARAMETERS = frozenset(
    {"token", "access_token", "auth", "key", "api_key", "apikey", "password", "secret", "sig",
     "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "client_secret"}
)  # fmt: skip
REDACTED = "REDACTED"


def redact_url(url: str) -> str:
    """`url` with its user information dropped and secret query values replaced."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = f"{host}:{port}" if port else host
    query = "&".join(_redacted_parameter(item) for item in parts.query.split("&"))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redacted_parameter(item: str) -> str:
    """One `name=value` of a query, as written unless the name says its value is a secret."""
    name, equals, _ = item.partition("=")
    return f"{name}={REDACTED}" if equals and unquote(name).lower() in SECRET_PARAMETERS else item


#: A URL inside a message; punctuation that ends a sentence or a clause is not part of it.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`|]+(?<![:.,;)])")
_PIN_IN_TEXT = re.compile(r"(?i)(pin-value=)[^&;\s'\"<>`|]*")


def url_secrets(url: str) -> list[str]:
    """The secrets a URL carries: its password and secret query values (a user name is not
    masked everywhere: "admin" would blank out ordinary text; the URL form drops it)."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        found += [v for n, v in parse_qsl(parts.query) if n.lower() in SECRET_PARAMETERS]
    except ValueError:
        return []
    return [unquote(v) for v in found if v] + [v for v in found if v]


def _has_credentials(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.username is not None or bool(url_secrets(url))
    except ValueError:
        return True  # shown as "<unparsable URL>"


def pin_values(text: str) -> list[str]:
    """The values of `pin-value=` attributes in a key URI or a message."""
    return [match.group(0).split("=", 1)[1] for match in _PIN_IN_TEXT.finditer(text)]


def _redact_match(match: re.Match[str]) -> str:
    """A URL found in text, redacted only when it carries credentials (others stay as written)."""
    url = match.group(0)
    return redact_url(url) if _has_credentials(url) else url


def redact_text(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` with every URL redacted, every pin-value masked and every known secret replaced."""
    text = _URL_IN_TEXT.sub(_redact_match, text)
    text = _PIN_IN_TEXT.sub(lambda match: match.group(1) + REDACTED, text)
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


#: environment variables whose values are credentials: never shown, wherever they end up
SECRET_ENV = (
    "VAULT_TOKEN", "BAO_TOKEN", "SEALGATE_PKCS11_PIN", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "GOOGLE_OAUTH_ACCESS_TOKEN", "AZURE_CLIENT_SECRET",
    "SEALGATE_ID_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",  # the signing service's client
)  # fmt: skip
MIN_SECRET = 4  # shorter values would mask ordinary words


def environment_secrets(env: Mapping[str, str]) -> tuple[str, ...]:
    """The credentials the environment holds (long enough to mask without eating words)."""
    return tuple(v for v in (env.get(n, "").strip() for n in SECRET_ENV) if len(v) >= MIN_SECRET)
