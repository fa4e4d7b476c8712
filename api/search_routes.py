"""The search blueprint: ``GET [base]/[type]`` and ``POST [base]/[type]/_search``."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("search", __name__)
