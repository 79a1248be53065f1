"""Integration tests against the emulator (a package, so module basenames may repeat across test folders)."""
