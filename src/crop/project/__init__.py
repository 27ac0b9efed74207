"""Projection: the matching cascade and the filters (step 4 and 5 of CROP)."""

from crop.project.projector import ALL_METHODS, ProjectionRequest, Projector, ProjectorConfig, clear_caches

__all__ = ["ALL_METHODS", "ProjectionRequest", "Projector", "ProjectorConfig", "clear_caches"]
