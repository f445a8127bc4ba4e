"""Where a run can go: offers and placement over the GPU inventory, what a job requests,
fleets, blocks, locality, autoscaled pools and multi-node order.
"""
