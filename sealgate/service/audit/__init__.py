"""The tamper-evident audit log: chained records, RFC 6962 Merkle checkpoints as C2SP signed
notes, inclusion and consistency proofs, and the verifier third parties run."""
