"""The signing service (`sealgate serve`): CI jobs sign with their OIDC identity, per-key grants
decide, and every decision lands in a hash-chained audit log. `app` is the only module that
imports the web framework; `signing` is the only one that calls the signer."""
