"""Signing core: keys behind URIs (HSM, KMS), streaming digests and CMS/CAdES signatures."""
