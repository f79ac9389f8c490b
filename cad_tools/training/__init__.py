"""Detector training (development tooling, outside the locked device)."""
