"""cenlib: the ChatEarthNet dataset builder library."""

__version__ = "0.1.0"
