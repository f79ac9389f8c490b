"""Breast geometry: segmentation, canonical orientation, landmarks and coordinate transforms."""

from cad.preprocess.geometry import BreastGeometry, compute_geometry
from cad.preprocess.mask import BreastMask, segment_breast
from cad.preprocess.transform import CanonicalTransform

__all__ = ["BreastGeometry", "BreastMask", "CanonicalTransform", "compute_geometry", "segment_breast"]
