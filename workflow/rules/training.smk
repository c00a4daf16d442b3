"""training stage rules (see docs/architecture.md)."""
