"""nnport conformance suite: numerical equivalence of every backend against the reference."""
