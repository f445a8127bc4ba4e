"""The ``berth`` command line: the top layer, over ``api``, ``workers`` and ``shared``."""
