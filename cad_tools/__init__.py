"""Development tooling that is not part of the device: phantoms (and later training, benchmarks)."""
