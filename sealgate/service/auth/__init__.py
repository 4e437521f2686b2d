"""OIDC authentication of CI jobs: a bearer JWT, verified against its issuer's JWKS."""
