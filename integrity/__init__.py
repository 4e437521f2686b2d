"""Source integrity: commit signatures, policy, tree proof, build watch and rebuild diff."""
