"""URLs as they may be shown: without user information and without secret-looking query values.

Credentials belong beside a URL (headers, environment), but users paste them into it anyway
(`https://user:pass@tsa/`, `?token=...`); every message, report and summary shows this form.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name.lower() in SECRET_PARAMETERS for name, _ in pairs):
            query = urlencode(
                [(n, REDACTED if n.lower() in SECRET_PARAMETERS else v) for n, v in pairs]
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
