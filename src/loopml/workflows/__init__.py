"""Step Functions-style workflows: Amazon States Language parsing, validation and a pure,
event-driven interpreter (``asl`` validates, ``paths`` moves the data, ``engine`` runs)."""
