"""Conformance kits for plugin authors, one per kind (a pytest plugin)."""
