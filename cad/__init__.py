"""Mammography CADe: the device software.

The device boundary is the ``cad`` package minus ``cad_tools`` (phantom generation and other
development tooling that never runs on a site).
"""

__version__ = "0.3.0"
ALGORITHM_NAME = "mammo-cad dual-view RetinaNet"
