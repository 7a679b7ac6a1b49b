"""Retry policy: exponential backoff with jitter, for UNAVAILABLE on idempotent calls only."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from replaybuf.errors import InvalidArgumentError, UnavailableError

__all__ = ["RetryPolicy", "call_with_retry", "reconnect_delay"]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How the client retries calls that failed with UNAVAILABLE.

    Only idempotent calls are retried: reads, samples, appends (which carry a producer id and
    sequence, so a retry never duplicates), evictions (re-evicting an absent item is a no-op),
    and ``create_table(exist_ok=True)``. The wait before retry ``k`` (1-based) is drawn
    uniformly from ``[b/2, b]`` with ``b = min(max_backoff, initial_backoff * multiplier**(k-1))``,
    so many clients reconnecting after a server restart spread out.

    Example:
        >>> RetryPolicy(max_attempts=1)  # never retry
        RetryPolicy(max_attempts=1, initial_backoff=0.05, max_backoff=2.0, multiplier=2.0)
    """

    max_attempts: int = 6
    """Attempts in total, including the first (1 disables retries). For streams (writers,
    samplers, subscriptions) this bounds *consecutive* failed reconnects."""

    initial_backoff: float = 0.05
    """Upper bound of the first wait, in seconds."""

    max_backoff: float = 2.0
    """Upper bound of any single wait, in seconds."""

    multiplier: float = 2.0
    """Growth of the bound per retry."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise InvalidArgumentError(
                f"RetryPolicy.max_attempts={self.max_attempts!r} must be an int >= 1 "
                "(1 disables retries)"
            )
        for name in ("initial_backoff", "max_backoff"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 600:
                raise InvalidArgumentError(f"RetryPolicy.{name}={value!r} must be seconds in [0, 600]")
        if not isinstance(self.multiplier, (int, float)) or self.multiplier < 1:
            raise InvalidArgumentError(f"RetryPolicy.multiplier={self.multiplier!r} must be >= 1")

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based), with jitter."""

        bound = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        # The module-level generator is reseeded in fork children, so workers do not move in step.
        return random.uniform(bound / 2, bound)


def reconnect_delay(policy: RetryPolicy, error: BaseException, failures: int) -> float | None:
    """Seconds a stream that failed with ``error`` waits before reconnecting, after ``failures``
    consecutive failed reconnects; None when it should give up and report ``error`` (it is not
    UNAVAILABLE, or ``policy.max_attempts`` are spent). The caller then counts one more failure.
    """

    if not isinstance(error, UnavailableError) or failures + 1 >= policy.max_attempts:
        return None
    return policy.backoff(failures + 1)


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    retryable: tuple[type[BaseException], ...] = (UnavailableError,),
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """Call ``fn`` until it returns, retrying on ``retryable`` errors as ``policy`` allows.

    Blocks for the calls and the waits between them; raises the last error when attempts run out.
    """

    attempt = 1
    while True:
        try:
            return fn()
        except retryable:
            if attempt >= policy.max_attempts:
                raise
            sleep(policy.backoff(attempt))
            attempt += 1
