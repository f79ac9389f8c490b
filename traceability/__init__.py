"""Traceability: requirements, risks, test tags and results collected into matrices."""
