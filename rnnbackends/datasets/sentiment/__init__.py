"""UCI Sentiment Labelled Sentences (Kotzias et al. 2015); see SOURCE.md."""
