"""What a cluster or namespace allows: Berth's access (RBAC), LimitRanges, ResourceQuotas, Pod
Security, and an operator's pod customisation.
"""
