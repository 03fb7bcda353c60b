"""rnnbackends' performance suite: backends timed side by side with PyTorch/cuDNN (``python -m perf``)."""
