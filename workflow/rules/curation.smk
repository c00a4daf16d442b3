"""curation stage rules (see docs/architecture.md)."""
