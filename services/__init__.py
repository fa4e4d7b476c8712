"""The FHIR REST application below HTTP: the typed request, its parsing and its permissions (no Flask)."""

from services.requests import EVERY_TYPE, BulkEdit, FhirRequest, Interaction, JobTarget, Need, needs_of

__all__ = ["EVERY_TYPE", "BulkEdit", "FhirRequest", "Interaction", "JobTarget", "Need", "needs_of"]
