"""Data files shipped with exaprov (read through importlib.resources)."""
