"""Resident mode: the daemon serves and pushes the checks of its own instance."""
