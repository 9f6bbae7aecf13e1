"""Reviewing a series someone posted: reading it (b4) and writing the reply."""
