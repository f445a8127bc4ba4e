"""Volumes: the claims Berth makes or registers and where a run using them may go."""
