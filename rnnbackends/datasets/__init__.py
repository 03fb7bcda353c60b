"""Compact copies of the small datasets the default tasks use (see each folder's SOURCE.md)."""
