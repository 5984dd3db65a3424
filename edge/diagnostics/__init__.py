"""Diagnostics: name what is wrong with a TLS endpoint (``diagnose``) or a pasted error report (``triage``)."""

from .cli import diagnose_main, triage_main
from .diagnose import diagnose
from .modes import FAILURE_MODES
from .target import TargetNotAllowed
from .triage import triage

__all__ = ["diagnose", "triage", "diagnose_main", "triage_main", "TargetNotAllowed", "FAILURE_MODES"]
