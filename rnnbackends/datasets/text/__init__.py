"""Tiny Shakespeare (char-rnn), xz-compressed; see SOURCE.md."""
