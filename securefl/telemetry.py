"""What the protocol core reports about its work, through an interface it owns: the round engine
and the key-holder's release call these methods, a transport plugs in an implementation
(`securefl.services.metrics` exports them to Prometheus), and the core imports no metrics
library.

Security: only counts, sizes, durations and error class names cross this interface, never an
id, a key, a ciphertext or an update; a metrics endpoint therefore reveals how busy a service
is and nothing about any site's data."""

from __future__ import annotations

# Stages of a round whose durations are reported (`RoundMetrics.stage_finished`).
COLLECT = "collect"  # from opening to closing: waiting for submissions
SUBMISSION = "submission"  # validating and adding one submission (network time excluded)
REVEAL = "reveal"  # from closing to the published average (decryption or unmasking)

COMPLETE, FAILED = "complete", "failed"


class RoundMetrics:
    """The engine's reports. This base class records nothing: engines run without metrics
    unless a transport gives them an implementation."""

    def round_opened(self) -> None:
        """A round was created (by an operator, a join or a first submission)."""

    def round_ended(self, outcome: str, reason: str | None, seconds: float) -> None:
        """A round ended `COMPLETE` or `FAILED` (`reason`: the error's class name), `seconds`
        after it opened."""

    def stage_finished(self, stage: str, seconds: float) -> None:
        """One of COLLECT, SUBMISSION, REVEAL took `seconds`."""

    def submission_accepted(self) -> None:
        """A submission was made durable and added."""

    def submission_refused(self, error: str) -> None:
        """A submission was refused with the error class `error`; it changed nothing."""

    def bytes_ingested(self, count: int) -> None:
        """Protected bytes received in submission chunks, accepted or not."""

    def submissions_in_flight(self, delta: int) -> None:
        """Submission streams being read: +1 when one starts, -1 when it ends."""

    def open_rounds(self, count: int) -> None:
        """Rounds that are open or closing now."""


class ReleaseMetrics:
    """The key-holder's reports. Records nothing by default."""

    def decryption(self, granted: bool, reason: str | None = None) -> None:
        """A decryption was granted, or refused with the error class `reason`."""


NO_METRICS = RoundMetrics()
NO_RELEASE_METRICS = ReleaseMetrics()
