"""What a person runs: the ``bulkhead`` commands, ``serve`` with its embedded servers, the bulk clients.

Nothing imports this package; it imports no Flask (a worker's parent process stays free of it).
"""
