"""bouhekictl's exit codes (documented in --help and doc/bouhekictl.8.md) and its error type."""

from __future__ import annotations

from typing import Optional

EXIT_OK = 0
EXIT_FAILURE = 1  # the operation failed (daemon error, timeout, lost connection)
EXIT_USAGE = 2  # bad command line, or the daemon rejected the request as malformed
EXIT_NOT_RUNNING = 3  # bouheki is not running or the bus is unreachable (LSB "not running")
EXIT_DENIED = 4  # permission denied (Reload needs root)
EXIT_CONFIG_INVALID = 5  # the configuration is invalid (reload refused, check-config failed)

EXIT_CODES_HELP = """\
exit status:
  0  success (check-config: the configuration is valid)
  1  the operation failed (daemon error, timeout, lost connection)
  2  usage error, or a request the daemon rejected as malformed
  3  bouheki is not running, or the bus is unreachable
  4  permission denied (reload needs root)
  5  the configuration is invalid (reload refused; check-config found problems)"""


class CtlError(Exception):
    """A failure to report: message for humans, exit code for scripts."""

    def __init__(
        self,
        message: str,
        exit_code: int = EXIT_FAILURE,
        dbus_error: Optional[str] = None,
        problems: Optional[list[str]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.dbus_error = dbus_error
        self.problems = problems or []

    def as_json(self) -> dict[str, object]:
        # Stable keys: scripts branch on "code" and "dbus_error".
        return {
            "error": {
                "code": self.exit_code,
                "dbus_error": self.dbus_error,
                "message": self.message,
                "problems": self.problems,
            }
        }
