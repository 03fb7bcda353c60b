"""The first 40,000 Tatoeba English-Spanish pairs (manythings.org), xz-compressed; see SOURCE.md."""
