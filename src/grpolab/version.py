"""The package version, in a leaf module so any layer can read it (pyproject reads it here too)."""

__version__ = "0.1.0"
