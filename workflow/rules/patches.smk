"""patches stage rules: Lanczos-3 rescaling, patch extraction, augmentation (see docs/architecture.md)."""
