"""Speech: audio files, log-mel features, a spoken-digit corpus made with eSpeak NG, and CTC acoustic models."""
