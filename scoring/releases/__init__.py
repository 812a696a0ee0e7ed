"""Releases: immutable, named cascades (`store`), who serves what (`routing`), and the record of it (`audit`)."""
