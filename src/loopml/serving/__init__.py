"""Real-time serving: the adaptive request batcher (batcher.py) that endpoints build on."""
