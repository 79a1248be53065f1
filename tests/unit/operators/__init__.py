"""Operator unit tests (a package, so module basenames may repeat across test folders)."""
