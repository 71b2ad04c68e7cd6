"""Tasks of the acnn paper (see notebooks/acnn/)."""
