"""Classify: embed articles and score them against every enabled topic; produce Matches."""
