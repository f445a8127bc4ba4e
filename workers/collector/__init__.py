"""The log collector: every job's output copied from the kubelet into the log store.

Where it runs: **a process of its own** (``berth log-collector``), one active
per installation under a Redis lease (``lease:log-collector``), standbys
waiting, as the proxy worker does. Why not elsewhere:

* *Throughput.* Following output is many long reads and a Python pass over
  every line. In the proxy worker it would share a GIL with the inventory
  watch, so a chatty job would delay the GPU inventory the scheduler waits
  for; in a Celery queue each followed container would hold a worker slot
  for its whole life.
* *Memory.* One thread per running container, each holding at most
  ``logs.chunk_bytes`` of lines plus one line (``logs.max_line_bytes``);
  nothing else is kept, since the store's cursor is the only state.
* *Failover.* The store's cursor and the lease fence make the copy exactly
  once across restarts: a new leader (or the same process back) reads every
  unfinished attempt again from its stored cursor, and a leader that lost the
  lease cannot append. A dead collector is replaced within the lease TTL; its
  pods' output waits in the kubelet's files meanwhile.

The pod watch (:mod:`.pods`) says which containers have started and ended;
a :class:`~workers.collector.follow.Follower` per attempt does the copying.
"""
