"""Orchestrator: submit / cancel / status service functions, planners, the orchestrate actor, the sweeper."""

from __future__ import annotations

from orchestrator import service
from orchestrator.registry import (
    FinishFunction,
    PlanFunction,
    Planner,
    PlanningContext,
    load_planner_modules,
    planner_for,
    register_planner,
)

__all__ = [
    "FinishFunction",
    "PlanFunction",
    "Planner",
    "PlanningContext",
    "load_planner_modules",
    "planner_for",
    "register_planner",
    "service",
]
