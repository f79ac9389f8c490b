"""`cad serve`: the CAD as a hospital service.

Studies arrive from a PACS (DICOMweb polling, or pushed over DICOM C-STORE) or from a watched
folder; a durable SQLite queue makes each (study, instance set) analysed exactly once, through
the same job `cad detect` runs (:mod:`cad.job`); results go back to the PACS (STOW-RS) or beside
the files; every analysis is appended to a hash-chained audit log. A small token-protected HTTP
API reports health, readiness and study status and allows requeueing.

Part of the device software: it decides which images are analysed and how failures are
reported, which the risk analysis treats as safety relevant (silent failure to analyse).
"""
