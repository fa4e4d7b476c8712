"""HTTP clients of Bulkhead's own bulk API (``bulkhead export`` and ``bulkhead import``)."""
