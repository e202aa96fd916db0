"""The run browser: what the model said, image by image (`python -m vh_bench.show`)."""
