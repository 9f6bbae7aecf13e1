"""Talking to the guest: SSH, parsers of what it prints, kernel-log patterns, its key, the cloud guest."""
