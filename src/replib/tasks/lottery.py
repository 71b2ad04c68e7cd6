"""Tasks of the lottery paper (see notebooks/lottery/)."""
