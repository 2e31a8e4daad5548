"""Exit codes: the same table for every `atelier` command, so a script can tell what happened.

A command that waits for a job (`--wait`, `status --watch`) or shows one that has ended (`status`)
exits with the job's outcome; a failure of the command itself, of its input or of the API has its
own code. The table is printed at the end of `atelier --help`.
"""

from __future__ import annotations

OK = 0
JOB_FAILED = 1  # the job failed, or a part of the command's own work did (a download that failed)
USAGE = 2  # a bad option or argument, no API key, a file that cannot be read
API_REFUSED = 3  # the API answered 4xx (its `detail` is printed): bad input, auth, not found, quota
API_UNAVAILABLE = 4  # the API could not be reached, or answered 5xx
JOB_CANCELLED = 5
JOB_PARTIAL = 6  # the job partially succeeded (some images missing), or some uploaded files were rejected
WAIT_TIMEOUT = 7  # gave up waiting (--timeout) while the job was still queued or running
INTERRUPTED = 130  # Ctrl-C

OF_STATUS = {
    "succeeded": OK,
    "failed": JOB_FAILED,
    "cancelled": JOB_CANCELLED,
    "partially_succeeded": JOB_PARTIAL,
}

TABLE = [
    (OK, "success; a job waited for or shown has succeeded (or is still queued or running: `status`)"),
    (JOB_FAILED, "the job failed, or the command's own work did (e.g. files that failed to download)"),
    (USAGE, "usage error: a bad option or argument, no API key, a file that cannot be read"),
    (API_REFUSED, "the API refused the request (4xx: invalid input, auth, not found, quota)"),
    (API_UNAVAILABLE, "the API could not be reached, or failed (5xx)"),
    (JOB_CANCELLED, "the job was cancelled"),
    (JOB_PARTIAL, "the job partially succeeded; or some uploaded files were rejected"),
    (WAIT_TIMEOUT, "gave up waiting: the job is still queued or running"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
]


def of_job(status: str) -> int:
    """The code of a job's status: its outcome once it ended, OK while it runs."""
    return OF_STATUS.get(status, OK)


def epilog() -> str:
    # \b keeps click from re-wrapping the table
    rows = "\n".join(f"  {code:>3}  {text}" for code, text in TABLE)
    return f"\b\nExit codes (every command):\n{rows}"
