"""Archive-scale batch analysis (`cad batch`): the same analysis and outputs as `cad detect`,
over hundreds of thousands of studies, resumable and exactly once, on this machine's processes
or on a Ray cluster (the ``batch`` extra)."""
