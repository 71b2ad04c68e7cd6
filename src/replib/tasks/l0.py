"""Tasks of the l0 paper (see notebooks/l0/)."""
