"""Tasks of the proxns paper (see notebooks/proxns/)."""
