"""Sealgate: the code-signing gate for CI/CD."""

__version__ = "0.1.0"
