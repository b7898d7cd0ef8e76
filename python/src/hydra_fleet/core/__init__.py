"""Pieces the three services share: config loading, logging, sd_notify, the HTTP server runner."""
