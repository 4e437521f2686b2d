"""oidc fixtures for the signing service's tests (filled in by issue 11)."""

from __future__ import annotations
