"""Alerts: fold matches into stories, apply subscription rules and deliver to channels exactly once."""
