"""A Kubernetes bearer token for an EKS cluster: `aws eks get-token`, built in.

The token is a presigned STS GetCallerIdentity URL with the header
`x-k8s-aws-id: <cluster name>` among its signed headers; the cluster's
authenticator replays the URL to learn the caller's identity. Presigning is done
locally with the session's credentials: no AWS call is made here.

`get_token` returns the ExecCredential that kubectl's exec plugin reads on stdout.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3

TOKEN_PREFIX = "k8s-aws-v1."
K8S_AWS_ID_HEADER = "x-k8s-aws-id"
# The authenticator rejects URLs presigned for longer than 60 s...
URL_EXPIRES_SECONDS = 60
# ...but accepts a token for 15 minutes; kubectl is told 14 so it refreshes in time.
TOKEN_EXPIRATION = timedelta(minutes=14)
EXEC_API_VERSION = "client.authentication.k8s.io/v1beta1"


def get_token(session: boto3.Session, cluster_name: str, region: str,
              endpoint_url: str | None = None) -> dict[str, Any]:
    """The ExecCredential (a JSON-ready dict) holding a fresh token for `cluster_name`."""
    expiration = datetime.now(timezone.utc) + TOKEN_EXPIRATION
    url = presigned_url(session, cluster_name, region, endpoint_url)
    token = TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
    return {
        "kind": "ExecCredential",
        "apiVersion": EXEC_API_VERSION,
        "spec": {},
        "status": {"expirationTimestamp": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"), "token": token},
    }


def presigned_url(session: boto3.Session, cluster_name: str, region: str,
                  endpoint_url: str | None = None) -> str:
    """GetCallerIdentity presigned for 60 s with the cluster name as a signed header."""
    sts = session.client("sts", region_name=region,
                         endpoint_url=endpoint_url or regional_sts_endpoint(region))
    # The cluster name travels as a pseudo-parameter (popped before validation) and
    # is put back as a header just before signing, the way the AWS CLI does it.
    sts.meta.events.register("provide-client-params.sts.GetCallerIdentity", _retrieve_k8s_aws_id)
    sts.meta.events.register("before-sign.sts.GetCallerIdentity", _inject_k8s_aws_id_header)
    return sts.generate_presigned_url("get_caller_identity", Params={K8S_AWS_ID_HEADER: cluster_name},
                                      ExpiresIn=URL_EXPIRES_SECONDS, HttpMethod="GET")


def regional_sts_endpoint(region: str) -> str:
    # The token must name a regional STS endpoint: the global one (sts.amazonaws.com,
    # botocore's "legacy" choice for some regions) is not accepted by every cluster.
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://sts.{region}.{suffix}"


def _retrieve_k8s_aws_id(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    if K8S_AWS_ID_HEADER in params:
        context[K8S_AWS_ID_HEADER] = params.pop(K8S_AWS_ID_HEADER)


def _inject_k8s_aws_id_header(request: Any, **_: Any) -> None:
    if K8S_AWS_ID_HEADER in request.context:
        request.headers[K8S_AWS_ID_HEADER] = request.context[K8S_AWS_ID_HEADER]
