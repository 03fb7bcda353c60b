"""Airline passengers and yearly sunspots; see SOURCE.md."""
