"""audit stage rules (see docs/architecture.md)."""
