"""The fuzzing tier: hypothesis targets for every parser of hostile input (bounded in CI)."""
