"""Sensor tests (a package: its module names repeat those under tests/unit/triggers)."""
