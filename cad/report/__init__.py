"""Report writers: what a site reads from a study result. findings.json is the result
contract's own form (:mod:`cad.result.findings_json`); here are the Mammography CAD SR
(:mod:`cad.report.sr`), the presentation state (:mod:`cad.report.gsps`), both written per study
by :mod:`cad.report.outputs`, and the overlay PNGs (:mod:`cad.report.overlays`)."""
