"""Tasks of the irda paper (see notebooks/irda/)."""
