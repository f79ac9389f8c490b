"""Verification statistics and reports (standalone FROC, reader-study MRMC): outside the device."""
