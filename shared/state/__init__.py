"""Berth's records and where they live: Redis, the store, the run and job state machine, and
what is kept there (inventory, usage, code, secrets, schedules).
"""
