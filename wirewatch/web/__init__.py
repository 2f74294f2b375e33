"""The API's own routes, its recent-matches store and live stream, and the dashboard."""
