"""Apache Airflow provider for Baseten inference.

Importing this package is cheap: it defines the version and nothing else. Hooks, operators, triggers and the local
emulator live in their own modules and are imported only where used.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
