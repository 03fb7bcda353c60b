"""Spoken digit strings synthesised with eSpeak NG for the speech task; see SOURCE.md."""
