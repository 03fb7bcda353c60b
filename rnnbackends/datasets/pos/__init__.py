"""UD English-EWT (CoNLL-U): a train subset, the full dev and test sets, xz-compressed; see SOURCE.md."""
