"""``bulkhead serve``: the supervisor of the embedded servers and of the API, orchestrator and workers."""
