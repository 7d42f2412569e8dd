"""The errors exaprov raises, and small helpers to read AWS error codes.

Exit codes: 1 when something failed while talking to AWS, 2 when
the input (config, flags, state file, lock) was wrong and nothing was changed.
The CLI is the only place that turns these into messages and exit codes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

# The AWS call each thread made last, (service, operation), set by exaprov.aws: an answer that
# cannot be parsed fails before botocore names its call anywhere else.
LAST_CALL = threading.local()


class _ChangesSent:
    """How many calls that change something in AWS this process has sent. Exit 2 promises
    that nothing changed: the CLI reads this before it keeps that promise."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def add(self) -> None:
        with self._lock:
            self.count += 1


CHANGES_SENT = _ChangesSent()


class ExaprovError(Exception):
    """Base of every error exaprov reports to the user without a traceback."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InputError(ExaprovError):
    """Bad input found before any change was made."""

    exit_code = 2


class ConfigError(InputError):
    """The config file is invalid: one line per problem, each naming its key."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(problems))


class StateError(InputError):
    """The state file cannot be used as it is (corrupt, foreign, newer format)."""


class LockedError(InputError):
    """Another exaprov process holds the deployment's lock."""


# What to do about the AWS errors users actually meet (README "Troubleshooting" lists them).
HINTS = {
    "VpcLimitExceeded": "the region's VPC quota (default 5) is used up: delete an unused VPC or "
                        "ask for more in Service Quotas (Amazon VPC → VPCs per Region)",
    "AddressLimitExceeded": "the region's Elastic IP quota (default 5) is used up: release an unused "
                            "address or raise 'EC2-VPC Elastic IPs' in Service Quotas",
    "NatGatewayLimitExceeded": "the NAT gateway quota per AZ is used up: delete one or raise it in "
                               "Service Quotas",
    "ResourceLimitExceeded": "an EKS quota is used up (clusters or node groups per account): see "
                             "Service Quotas → Amazon EKS",
    "UnsupportedAvailabilityZoneException": "EKS has no capacity in one of the region's zones; "
                                            "try another region or ask AWS support",
    "InsufficientInstanceCapacity": "no capacity for that instance type in the zone right now: "
                                    "try another instance type, or run `exaprov up` again later",
    "UnauthorizedOperation": "the credentials lack a permission exaprov needs (README: IAM "
                             "permissions)",
    "AccessDenied": "the credentials lack a permission exaprov needs (README: IAM permissions)",
    "AccessDeniedException": "the credentials lack a permission exaprov needs (README: IAM "
                             "permissions)",
    "DependencyViolation": "something else still uses it: ENIs of just-deleted NAT gateways, load "
                           "balancers or nodes linger for minutes. Run `exaprov destroy` again in a "
                           "few minutes; if it stays, look for network interfaces left in the VPC",
}

# EC2 answers these for an ID it does not know: right after a create the ID is not yet known
# everywhere (eventual consistency), or it was deleted outside exaprov.
_NEW_ID_HINT = ("EC2 does not know this ID yet (a new resource takes a moment to be known "
                "everywhere) or it was deleted outside exaprov: run the command again")
HINTS.update({code: _NEW_ID_HINT for code in (
    "InvalidVpcID.NotFound", "InvalidSubnetID.NotFound", "InvalidGroup.NotFound",
    "InvalidRouteTableID.NotFound", "InvalidInternetGatewayID.NotFound",
    "InvalidNatGatewayID.NotFound", "NatGatewayNotFound", "InvalidAllocationID.NotFound",
    "InvalidVpcPeeringConnectionID.NotFound", "InvalidLaunchTemplateId.NotFound")})
# Throttling, 5xx and dropped connections reach the user only after botocore's 11 attempts.
_THROTTLED_HINT = ("AWS throttled this call on every one of exaprov's attempts (the account's API "
                   "rate is shared with every other tool using it): wait a minute and run the "
                   "command again")
HINTS.update({code: _THROTTLED_HINT for code in (
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "SlowDown", "RequestThrottled", "EC2ThrottledException")})
_UNAVAILABLE_HINT = ("AWS answered with a server error on every attempt: run the command again; "
                     "if it persists, see the AWS Health Dashboard for the region")
HINTS.update({code: _UNAVAILABLE_HINT for code in (
    "InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable")})
_CONNECTION_HINT = ("the connection to AWS kept failing on every attempt: check the network (proxy, "
                    "VPN, --endpoint-url) and run the command again")
HINTS.update({code: _CONNECTION_HINT for code in (
    "ConnectionClosedError", "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError")})


class AwsError(ExaprovError):
    """An AWS call failed; names the step and the operation."""

    def __init__(self, step: str, operation: str, code: str, message: str,
                 hint: str | None = None, no_hint: bool = False) -> None:
        self.step, self.operation, self.code = step, operation, code
        super().__init__(f"{step}: {operation} failed ({code}): {message}",
                         None if no_hint else hint or HINTS.get(code))


# What an endpoint that is not AWS (an emulator, a proxy, a wrong URL) answers for an API it
# does not have: HTTP 501, or the codes AWS's own protocols use for an unknown action.
_NOT_IMPLEMENTED_CODES = {"501", "NotImplemented", "NotImplementedException", "InvalidAction",
                          "UnknownOperationException", "UnrecognizedClientException"}


def not_implemented_call(exc: BaseException) -> tuple[str, str] | None:
    """(service, operation) when `exc` says the endpoint does not implement that call at all:
    an HTTP 501, an unknown-operation code, or an answer that is not AWS's (unparseable)."""
    if type(exc).__name__ == "ResponseParserError":  # not AWS's answer: HTML, a proxy's page...
        return getattr(LAST_CALL, "call", None) or ("the service", "?")
    response: Any = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    meta = response.get("ResponseMetadata", {})
    if meta.get("HTTPStatusCode") == 501 or error_code(exc) in _NOT_IMPLEMENTED_CODES:
        return meta.get("ExaprovService", "the service"), getattr(exc, "operation_name", "?")
    return None


def from_botocore(step: str, exc: BaseException) -> AwsError:
    """The AwsError for a botocore error raised by a call of `step`."""
    operation = getattr(exc, "operation_name", None) or "request"
    unimplemented = not_implemented_call(exc)
    if unimplemented is not None:
        service, operation = unimplemented
        return AwsError(step, operation, error_code(exc) or type(exc).__name__,
                        f"this endpoint does not implement {service} {operation} (its answer "
                        "is not AWS's)", no_hint=True)
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        return AwsError(step, operation, error_code(exc) or "Error",
                        response.get("Error", {}).get("Message", str(exc)))
    return AwsError(step, "request", type(exc).__name__, str(exc))


class LostAnswer(ExaprovError):
    """A create whose answer was lost: AWS may have made the resource (see lost_answers)."""

    def __init__(self, address: str, message: str, hint: str | None = None) -> None:
        self.address = address
        super().__init__(message, hint)


class WaitTimeout(ExaprovError):
    """A resource did not reach the state we waited for within the bound."""


class Cancelled(ExaprovError):
    """The user pressed Ctrl-C; work in flight was recorded."""

    exit_code = 130


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError, else None."""
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


_NOT_FOUND_SUFFIXES = (".NotFound", "NotFound", "NotFoundFault", "NoSuchEntity",
                       "NoSuchBucket", "ResourceNotFoundException", "NotFoundException")


def is_not_found(exc: BaseException) -> bool:
    """True for the many ways AWS says "no such resource"."""
    code = error_code(exc) or ""
    # HeadBucket has no body, so its "not found" is the bare status code.
    return code.endswith(_NOT_FOUND_SUFFIXES) or code in {"NoSuchKey", "DBSubnetGroupNotFoundFault", "404"}


def ignore_not_found(call: Callable[[], Any]) -> None:
    """Run a delete-like call; "already gone" is success."""
    try:
        call()
    except Exception as exc:
        if not is_not_found(exc):
            raise
