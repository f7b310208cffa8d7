"""Synthetic world: land cover, Sentinel-2, WorldCover and their STAC items."""
