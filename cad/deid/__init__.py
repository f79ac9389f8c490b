"""De-identified export of cases that leave the site (`cad deidentify`, RC-040)."""
