"""Processing role: worker processes that turn request records into hits (see supervisor.py)."""
