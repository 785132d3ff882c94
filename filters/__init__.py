"""Quality signals and the rules over them (Gopher, C4, FineWeb, user rules)."""
