"""A run's output as data: the lines the collector copies and ``berth logs`` serves.

:mod:`.lines` is the pure part (kubelet timestamps, the resume cursor, what a
reader asked for); :mod:`.store` keeps the lines in Redis, one stream per
job attempt, capped, and written only by the collector that holds the lease.
"""
