"""The model registry: what a model reference means (``refs``, ``resolve``), aliases and their
history (``aliases``), new versions (``registration``), the promote decision (``champion``),
listings (``catalog``) and deletion. Every other context asks it; ``store/models_repo.py``
keeps the SQL. Nothing is imported here: ``registry.refs`` must stay light for the CLI."""
