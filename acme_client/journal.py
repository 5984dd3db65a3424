"""The order journal's small helpers: which errors are transient, the quick retry of the same order, and the
crash test hook.

Transient (retry the SAME order, quickly, with jitter, never after the order's expiry): the CA could not be reached,
answered 5xx, refused a nonce, or did not finish in time. A bad nonce is retried at once with a fresh nonce, several
times (the ``acme`` package retries it only once). Only a verdict of the CA ends an order: an ``invalid`` order or
authorization, or a final problem type (:class:`acme_client.errors.FinalError`).

Test hook: ``EDGECERT_TEST_CRASH_AT=<step>`` (a :class:`store.models.JournalStep` value) makes the process exit at
once (``os._exit(137)``, as a SIGKILL would) right after that step is journaled. Tests use it to kill a real
``edgecert serve`` at each step and check that a restart continues the same order. One more point has no step of
its own: :data:`NEW_ORDER_ANSWERED`, right after the CA answered newOrder and before the journal has the order's URL
(the restart finds the order among the account's open orders). Never set it in production.
"""

from __future__ import annotations

import logging
import os

from . import errors
from .retry import RetrySchedule

__all__ = ["TRANSIENT", "CA_RETRY_SCHEDULE", "BAD_NONCE_RETRIES", "is_transient", "crash_point",
           "CRASH_ENV", "NEW_ORDER_ANSWERED"]

log = logging.getLogger(__name__)

#: Errors after which the same order is tried again (not ended).
TRANSIENT: tuple[type[errors.AcmeError], ...] = (errors.NetworkError, errors.ServerUnavailable, errors.BadNonce,
                                                 errors.OrderTimeout)
#: Within one attempt: 0.5 s, 1 s, 2 s ... at most 20 s between tries (+-30%), bounded by the order's expiry.
CA_RETRY_SCHEDULE = RetrySchedule("ca-transient", (0.5,), factor=2.0, cap=20.0, jitter=0.3)
#: A refused nonce is retried at once, with a fresh nonce, this many times (each try also has acme's own retry).
BAD_NONCE_RETRIES = 8
CRASH_ENV = "EDGECERT_TEST_CRASH_AT"
#: The crash point between the CA's answer to newOrder and the journal's ``ordered`` step.
NEW_ORDER_ANSWERED = "new-order-answered"


def is_transient(e: BaseException) -> bool:
    """A transport error, a 5xx, a bad nonce or a timeout: retry the same order."""
    return isinstance(e, TRANSIENT)


def crash_point(step: str) -> None:
    """Test hook (see the module docstring): exit at once when ``EDGECERT_TEST_CRASH_AT`` names ``step``."""
    if os.environ.get(CRASH_ENV) == step:
        log.warning("test hook %s=%s: exiting right here", CRASH_ENV, step)
        logging.shutdown()
        os._exit(137)
