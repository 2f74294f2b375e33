"""Learning from feedback, measured: ``python -m bench.feedback`` (see ``__main__``)."""
