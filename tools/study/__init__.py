"""`dassdp-study`: paired-seed comparisons of trainer runs (arms x seeds) with confidence intervals."""
