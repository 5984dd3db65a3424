"""Diagnostics: name what is wrong with a TLS endpoint (``diagnose``) or a pasted error report (``triage``)."""

from .diagnose import TargetNotAllowed, diagnose, diagnose_main
from .modes import FAILURE_MODES
from .triage import triage, triage_main

__all__ = ["diagnose", "triage", "diagnose_main", "triage_main", "TargetNotAllowed", "FAILURE_MODES"]
