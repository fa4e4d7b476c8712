"""The request hooks around every view: tokens and tenants, authorization, quotas, audit, metrics, SMART."""
