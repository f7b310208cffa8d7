"""STAC: serve catalogues on loopback, search them, and speak their dialects."""
