"""Tools that prepare inputs for the PPD scripts (as CleanRL keeps cleanrl_utils beside its scripts)."""
