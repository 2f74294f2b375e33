"""One module per notification channel, behind the ``Channel`` protocol."""
