"""The divergence engine: the token table's columns, the output-head split, the fused CPU sweep and the scorer."""
