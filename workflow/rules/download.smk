"""download stage rules (see docs/architecture.md)."""
