"""The EKS cluster: control plane, its primary security group rule, OIDC provider.

Owns: the cluster (private + public endpoint, secrets encrypted with the `kms`
step's key, api/audit/authenticator logs into the `logs` step's group), the
ingress rule on the EKS-created primary security group (TCP 0–65535 from the
VPC, so clients anywhere in the VPC reach ExaDeploy), and the IAM OIDC provider
for the cluster's issuer (IRSA). The cluster is created without self-managed add-ons
(the `addons` steps make them managed ones), with `cluster.support_type` as its upgrade
policy and `cluster.deletion_protection`; both are reconciled with UpdateClusterConfig.
`plan` and `status` also tell the version's EKS support (exaprov/eks_versions.py) and, for
a pending upgrade, its sequence and EKS's upgrade insights (exaprov/upgrade.py).
Reads: network (private subnets, VPC), iam (cluster role), kms, logs,
security-groups (the additional cluster SG).
Records: cluster (ID = name), primary-sg-rule, oidc-provider.
Destroy order: what Kubernetes made in the VPC (load balancers tagged for the
cluster, then their security groups) → cluster → wait deleted → OIDC provider.
Node groups are another step, destroyed before this one (EKS refuses to delete a
cluster that still has node groups).
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from exaprov.engine import TAG_DEPLOYMENT, Change, Mode, Step, StepContext, is_unknown
from exaprov.errors import AwsError, ExaprovError, InputError, error_code, is_not_found
from exaprov.ownership import is_ours
from exaprov.state import FAILED
from exaprov.steps.iam import normalise_policy
from exaprov.steps.security_groups import Rule, ensure_rules

LOG_TYPES = ["api", "audit", "authenticator"]
CLUSTER_CREATE_TIMEOUT = 40 * 60  # AWS: about 10 minutes (16 in us-west-1)
CLUSTER_DELETE_TIMEOUT = 20 * 60  # AWS: about 3 minutes
CLUSTER_UPDATE_TIMEOUT = 60 * 60  # a version upgrade takes 20-40 minutes
# IAM is eventually consistent: EKS rejects a role created seconds ago as one
# it "could not assume". Retried for this long, and for that message only.
ROLE_PROPAGATION_TIMEOUT = 2 * 60
OIDC_CLIENT_ID = "sts.amazonaws.com"
# The root CA thumbprint of oidc.eks.*.amazonaws.com. IAM no longer checks it for
# EKS issuers, but older API versions require one.
OIDC_THUMBPRINT = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280"


def ensure_cluster(ctx: StepContext) -> dict[str, Any]:
    cfg = ctx.cfg.cluster
    name = cfg.cluster_name
    cluster = find_cluster(ctx, name)
    if cluster is not None and cluster["status"] == "FAILED":
        # A failed control plane never recovers: delete it and create it again.
        _check_ours(ctx, cluster)
        ctx.run.add_change(Change("replace", ctx.address("cluster"), "eks:cluster",
                                  "FAILED: delete, then create again"))
        if ctx.planning:
            ensure_secrets_key_access(ctx)
            return _planned_outputs(ctx, name)
        ctx.report(f"cluster {name} is FAILED; replacing it")
        ctx.run.writer.record(ctx.address("cluster"), status=FAILED)
        ctx.call(_delete_and_wait, ctx, name)
        cluster = None
    if cluster is not None and cluster["status"] == "DELETING":
        if not ctx.planning:
            _wait_gone(ctx, name)
        cluster = None
    ensure_secrets_key_access(ctx)
    made_now = cluster is None
    if cluster is None:
        ctx.create("cluster", "eks:cluster", lambda token: _create_cluster(ctx, token),
                   detail=f"Kubernetes {cfg.cluster_version}", name=name)
        if ctx.planning:
            return _planned_outputs(ctx, name)
        cluster = wait_for_cluster(ctx, name)
    else:
        _check_ours(ctx, cluster)
        ctx.found("cluster", "eks:cluster", name, live=cluster["status"])
        if cluster["status"] != "ACTIVE" and not ctx.planning:
            cluster = wait_for_cluster(ctx, name)  # a previous run timed out while it was CREATING
        live_version = cluster["version"]
        cluster = reconcile_cluster(ctx, cluster)  # in a plan: the version an upgrade goes to
        if ctx.run.mode is Mode.PLAN:
            explain_version(ctx, live_version)

    primary_sg = cluster["resourcesVpcConfig"].get("clusterSecurityGroupId")
    vpc_cidr = ctx.upstream["network"]["vpc_cidr_block"]
    if primary_sg:
        ensure_rules(ctx, "primary-sg-rule", primary_sg,
                     {Rule("ingress", "tcp", 0, 65535, vpc_cidr, "exaprov: clients in the VPC")},
                     exclusive=False, initial=made_now)  # part of making a new cluster
    issuer = cluster["identity"]["oidc"]["issuer"]
    oidc_arn = ensure_oidc_provider(ctx, issuer)
    return {
        "cluster_name": name,
        "cluster_arn": cluster["arn"],
        "cluster_endpoint": cluster.get("endpoint"),
        "cluster_certificate_authority_data": cluster.get("certificateAuthority", {}).get("data"),
        # In a plan, the version an upgrade goes to: the add-ons and node groups plan theirs.
        "cluster_version": cluster["version"],
        "cluster_primary_security_group_id": primary_sg,
        "cluster_oidc_issuer_url": issuer,
        "oidc_provider": issuer.removeprefix("https://"),
        "oidc_provider_arn": oidc_arn,
    }


def explain_version(ctx: StepContext, live: str) -> None:
    """`plan` / `status`: the version's support status and end dates, a warning when it is in
    extended support or leaves standard support within 60 days, and a pending upgrade's
    sequence with EKS's upgrade insights."""
    from exaprov import eks_versions, upgrade

    eks = ctx.aws.client("eks")
    try:
        versions = ctx.call(lambda: eks_versions.from_eks(eks, [live]))
    except AwsError as exc:  # an endpoint without the call: exaprov's table
        ctx.report(f"DescribeClusterVersions: {exc.message}; using exaprov's table")
        versions = eks_versions.shipped()
    line, warning = eks_versions.describe(versions.get(live), live)
    ctx.run.notice(line)
    if warning:
        ctx.run.notice(f"WARNING: {warning}")
    wanted = ctx.cfg.cluster.cluster_version
    if _minor(wanted) == _minor(live) + 1:
        from exaprov.steps.addons import wanted_addons
        from exaprov.steps.node_groups import desired_groups

        ctx.run.notice(f"Upgrade {live} → {wanted}, one sequence, each step waited for: the "
                       f"control plane, then every add-on to its default for {wanted} "
                       f"({', '.join(wanted_addons(ctx.cfg))}), then the node groups "
                       f"({', '.join(desired_groups(ctx.cfg))})")
        for insight in upgrade.blocking_insights(eks, ctx.cfg.cluster.cluster_name):
            ctx.run.notice(f"WARNING: {upgrade.describe_insight(insight)}")


def _planned_outputs(ctx: StepContext, name: str) -> dict[str, Any]:
    unknown = f"(new {ctx.address('cluster')})"
    if ctx.run.mode is Mode.PLAN:
        explain_version(ctx, ctx.cfg.cluster.cluster_version)
    ensure_oidc_provider(ctx, unknown)  # listed in the plan; its URL is known only later
    return {"cluster_name": name, "cluster_arn": unknown, "cluster_endpoint": unknown,
            "cluster_certificate_authority_data": unknown,
            "cluster_version": ctx.cfg.cluster.cluster_version,
            "cluster_primary_security_group_id": unknown, "cluster_oidc_issuer_url": unknown,
            "oidc_provider": unknown, "oidc_provider_arn": unknown}


KEY_ACCESS_POLICY = "exaprov-secrets-encryption"


def ensure_secrets_key_access(ctx: StepContext) -> None:
    """Let the cluster role use the secrets key (the key policy defers to IAM policies)."""
    iam = ctx.aws.client("iam")
    role = ctx.upstream["iam"]["cluster_role_name"]
    document = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Resource": ctx.upstream["kms"]["kms_key_arn"],
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"]}]})
    put = lambda: iam.put_role_policy(RoleName=role, PolicyName=KEY_ACCESS_POLICY,  # noqa: E731
                                      PolicyDocument=document)
    live = None
    if not is_unknown(ctx.upstream["kms"]["kms_key_arn"]):
        try:
            live = ctx.call(lambda: iam.get_role_policy(RoleName=role, PolicyName=KEY_ACCESS_POLICY))
        except AwsError as exc:
            if exc.__cause__ is None or not is_not_found(exc.__cause__):
                raise
    if live is None:
        ctx.create("key-access", "iam:role-policy",
                   lambda token: (put(), f"{role}/{KEY_ACCESS_POLICY}")[1],
                   detail=f"{role} may use the secrets key")
        return
    ctx.found("key-access", "iam:role-policy", f"{role}/{KEY_ACCESS_POLICY}")
    if normalise_policy(live["PolicyDocument"]) != normalise_policy(document):
        ctx.update("key-access", "iam:role-policy", "policy document", put)


def find_cluster(ctx: StepContext, name: str) -> dict[str, Any] | None:
    try:
        return ctx.call(lambda: ctx.aws.client("eks").describe_cluster(name=name))["cluster"]
    except AwsError as exc:
        if exc.__cause__ is not None and is_not_found(exc.__cause__):
            return None
        raise


def _check_ours(ctx: StepContext, cluster: dict[str, Any]) -> None:
    """Never adopt a cluster some other tool or deployment made under the same name."""
    owner = cluster.get("tags", {}).get(TAG_DEPLOYMENT)
    if not is_ours(ctx.cfg.name, cluster.get("tags")):
        raise InputError(f"cluster.cluster_name: an EKS cluster named {cluster['name']!r} already "
                         f"exists and is not this deployment's (its {TAG_DEPLOYMENT} tag: {owner!r})",
                         hint="choose another cluster.cluster_name")


def _create_cluster(ctx: StepContext, token: str) -> str:
    cfg, eks = ctx.cfg.cluster, ctx.aws.client("eks")
    net, sgs = ctx.upstream["network"], ctx.upstream["security-groups"]
    params = {
        "name": cfg.cluster_name,
        "version": cfg.cluster_version,
        "roleArn": ctx.upstream["iam"]["cluster_role_arn"],
        "resourcesVpcConfig": {
            "subnetIds": net["private_subnet_ids"],
            "securityGroupIds": [sgs["cluster_security_group_id"]],
            "endpointPrivateAccess": True,
            "endpointPublicAccess": True,
            "publicAccessCidrs": list(cfg.endpoint_public_access_cidrs),
        },
        "logging": {"clusterLogging": [{"types": LOG_TYPES, "enabled": True}]},
        # Access entries (the `cluster-access` step) need the API mode; the aws-auth
        # ConfigMap keeps working beside it.
        "accessConfig": {"authenticationMode": "API_AND_CONFIG_MAP",
                         "bootstrapClusterCreatorAdminPermissions": True},
        "encryptionConfig": [{"resources": ["secrets"],
                              "provider": {"keyArn": ctx.upstream["kms"]["kms_key_arn"]}}],
        "tags": ctx.tags("cluster", name=cfg.cluster_name),
        # EKS installs no self-managed vpc-cni, kube-proxy or coredns (which it would never
        # upgrade): the `addons` steps install them as managed add-ons. Immutable once created.
        "bootstrapSelfManagedAddons": False,
        # The API's default is EXTENDED: billed at $0.60 instead of $0.10 per hour once the
        # version leaves standard support. Sent explicitly (EKS docs, "Cluster upgrade policy").
        "upgradePolicy": {"supportType": cfg.support_type},
        "deletionProtection": cfg.deletion_protection,
        # The same token on a retried create returns the first cluster, never a second.
        "clientRequestToken": token,
    }
    return ctx.retry_while(
        f"cluster role {params['roleArn']}", lambda: eks.create_cluster(**params),
        {"InvalidParameterException"}, message="role", timeout=ROLE_PROPAGATION_TIMEOUT,
        hint=f"check that the role {params['roleArn']} exists and trusts eks.amazonaws.com",
    )["cluster"]["name"]


def wait_for_cluster(ctx: StepContext, name: str, timeout: float = CLUSTER_CREATE_TIMEOUT
                     ) -> dict[str, Any]:
    eks = ctx.aws.client("eks")
    cluster = ctx.wait_until(f"cluster {name}", lambda: eks.describe_cluster(name=name)["cluster"],
                             lambda c: c["status"] in ("ACTIVE", "FAILED"), timeout=timeout,
                             interval=10, describe=lambda c: c["status"])
    if cluster["status"] == "FAILED":
        ctx.run.writer.record(ctx.address("cluster"), status=FAILED)
        raise ExaprovError(f"cluster: EKS cluster {name} FAILED",
                           hint="run `exaprov up` again to replace it")
    return cluster


def reconcile_cluster(ctx: StepContext, cluster: dict[str, Any]) -> dict[str, Any]:
    """Version one minor up, endpoint CIDRs, logging: in place, as EKS allows."""
    cfg, eks, name = ctx.cfg.cluster, ctx.aws.client("eks"), cluster["name"]
    live, wanted = _minor(cluster["version"]), _minor(cfg.cluster_version)
    if wanted != live:
        if wanted != live + 1:
            raise InputError(
                f"cluster.cluster_version: the cluster runs {cluster['version']}; EKS upgrades one "
                f"minor version at a time and never downgrades (got {cfg.cluster_version!r})",
                hint=f"set 1.{live + 1} first, run `exaprov up`, then go on")
        ctx.update("cluster", "eks:cluster", f"version {cluster['version']} → {cfg.cluster_version}",
                   lambda: wait_for_update(ctx, name, eks.update_cluster_version(
                       name=name, version=cfg.cluster_version)))
    vpc = cluster["resourcesVpcConfig"]
    if sorted(vpc.get("publicAccessCidrs", [])) != sorted(cfg.endpoint_public_access_cidrs) or \
            not vpc.get("endpointPublicAccess") or not vpc.get("endpointPrivateAccess"):
        ctx.update("cluster", "eks:cluster",
                   f"endpoint access: private+public from {', '.join(cfg.endpoint_public_access_cidrs)}",
                   lambda: wait_for_update(ctx, name, eks.update_cluster_config(
                       name=name, resourcesVpcConfig={
                           "endpointPrivateAccess": True, "endpointPublicAccess": True,
                           "publicAccessCidrs": list(cfg.endpoint_public_access_cidrs)})))
    enabled = {t for entry in cluster.get("logging", {}).get("clusterLogging", [])
               if entry.get("enabled") for t in entry.get("types", [])}
    if not set(LOG_TYPES) <= enabled:
        ctx.update("cluster", "eks:cluster", f"control-plane logs {', '.join(LOG_TYPES)}",
                   lambda: wait_for_update(ctx, name, eks.update_cluster_config(
                       name=name, logging={"clusterLogging": [{"types": LOG_TYPES, "enabled": True}]})))
    if cluster.get("accessConfig", {}).get("authenticationMode") == "CONFIG_MAP":
        # Access entries (the cluster-access step) need the API mode; the ConfigMap keeps working.
        ctx.update("cluster", "eks:cluster", "authentication mode CONFIG_MAP → API_AND_CONFIG_MAP",
                   lambda: wait_for_update(ctx, name, eks.update_cluster_config(
                       name=name, accessConfig={"authenticationMode": "API_AND_CONFIG_MAP"})))
    support = cluster.get("upgradePolicy", {}).get("supportType")
    if support != cfg.support_type:
        ctx.update("cluster", "eks:cluster", f"support type {support} → {cfg.support_type}",
                   lambda: wait_for_update(ctx, name, eks.update_cluster_config(
                       name=name, upgradePolicy={"supportType": cfg.support_type})))
    if bool(cluster.get("deletionProtection")) != cfg.deletion_protection:
        ctx.update("cluster", "eks:cluster",
                   f"deletion protection {'on' if cfg.deletion_protection else 'off'}",
                   lambda: wait_for_update(ctx, name, eks.update_cluster_config(
                       name=name, deletionProtection=cfg.deletion_protection)))
    if ctx.planning and wanted != live:
        # What `up` will have done by the time the node groups come: they plan their own
        # rolling update to this version, as `up` then makes it.
        return {**cluster, "version": cfg.cluster_version}
    changed = any(c.address == ctx.address("cluster") for c in ctx.run.changes)
    if ctx.planning or not changed:
        return cluster
    return ctx.call(lambda: eks.describe_cluster(name=name))["cluster"]


def wait_for_update(ctx: StepContext, name: str, response: dict[str, Any],
                    nodegroup: str | None = None) -> None:
    """Follow an EKS update to its end: the resource may still read ACTIVE just after the
    call, and an update can fail while the resource stays ACTIVE."""
    eks, update_id = ctx.aws.client("eks"), response["update"]["id"]
    extra = {"nodegroupName": nodegroup} if nodegroup else {}
    update = ctx.wait_until(
        f"update {update_id} of {nodegroup or name}",
        lambda: eks.describe_update(name=name, updateId=update_id, **extra)["update"],
        lambda u: u["status"] in ("Successful", "Failed", "Cancelled"),
        timeout=CLUSTER_UPDATE_TIMEOUT, interval=20, describe=lambda u: u["status"])
    if update["status"] != "Successful":
        errors = "; ".join(e.get("errorMessage", "") for e in update.get("errors", []))
        raise ExaprovError(f"{ctx.step}: {update['type']} of {nodegroup or name} {update['status']}: "
                           f"{errors or 'no reason given'}", hint="fix the cause and run `exaprov up` again")


def _minor(version: str) -> int:
    return int(version.split(".")[1])


def ensure_oidc_provider(ctx: StepContext, issuer: str) -> str:
    iam = ctx.aws.client("iam")
    url = issuer.removeprefix("https://")
    if is_unknown(issuer):
        return ctx.create("oidc-provider", "iam:oidc-provider", lambda token: "", detail="IRSA")
    # The recorded provider is read directly (its ARN ends in its URL); listing every
    # provider of the account is the fallback for a new issuer or a lost record.
    arn, live = recorded_oidc_provider(ctx, url), None
    if arn is not None:
        live = _get_oidc_provider(ctx, arn)
    if live is None:
        arn = find_oidc_provider(ctx, url)
        live = _get_oidc_provider(ctx, arn) if arn else None
    if arn is None or live is None:
        _delete_stale_oidc_provider(ctx, url)
        return ctx.create("oidc-provider", "iam:oidc-provider",
                          lambda token: iam.create_open_id_connect_provider(
            Url=issuer, ClientIDList=[OIDC_CLIENT_ID], ThumbprintList=[OIDC_THUMBPRINT],
            Tags=[{"Key": k, "Value": v} for k, v in ctx.tags("oidc-provider").items()],
        )["OpenIDConnectProviderArn"], detail=url)
    ctx.found("oidc-provider", "iam:oidc-provider", arn)
    clients = live.get("ClientIDList", [])
    if OIDC_CLIENT_ID not in clients:
        ctx.update("oidc-provider", "iam:oidc-provider", f"client id {OIDC_CLIENT_ID}",
                   lambda: iam.add_client_id_to_open_id_connect_provider(
                       OpenIDConnectProviderArn=arn, ClientID=OIDC_CLIENT_ID))
    return arn


def _delete_stale_oidc_provider(ctx: StepContext, url: str) -> None:
    """The provider recorded for an issuer the cluster no longer has: the cluster was made
    again (an interrupted destroy deleted it, or it FAILED and was replaced), and EKS gave
    the new one a new issuer. It is deleted if IAM says it is this deployment's."""
    arn = ctx.recorded_id("oidc-provider")
    if not arn or is_unknown(arn) or arn.endswith(f":oidc-provider/{url}"):
        return
    iam = ctx.aws.client("iam")
    try:
        tags = ctx.call(lambda: iam.list_open_id_connect_provider_tags(
            OpenIDConnectProviderArn=arn)).get("Tags", [])
    except AwsError as exc:
        if exc.__cause__ is not None and is_not_found(exc.__cause__):
            ctx.forget("oidc-provider")
            return
        raise
    if {"Key": TAG_DEPLOYMENT, "Value": ctx.cfg.name} not in tags:
        return  # not ours: never touched
    ctx.delete("oidc-provider", "iam:oidc-provider", arn,
               lambda a: iam.delete_open_id_connect_provider(OpenIDConnectProviderArn=a),
               detail=f"{arn.rsplit('/', 1)[-1]} (the issuer of a cluster that is gone)")


def recorded_oidc_provider(ctx: StepContext, url: str) -> str | None:
    arn = ctx.recorded_id("oidc-provider")
    return arn if arn and not is_unknown(arn) and arn.endswith(f":oidc-provider/{url}") else None


def _get_oidc_provider(ctx: StepContext, arn: str) -> dict[str, Any] | None:
    try:
        return ctx.call(lambda: ctx.aws.client("iam").get_open_id_connect_provider(
            OpenIDConnectProviderArn=arn))
    except AwsError as exc:
        if exc.__cause__ is not None and is_not_found(exc.__cause__):
            return None
        raise


def find_oidc_provider(ctx: StepContext, url: str) -> str | None:
    providers = ctx.call(lambda: ctx.aws.client("iam").list_open_id_connect_providers())
    for provider in providers["OpenIDConnectProviderList"]:
        if provider["Arn"].endswith(f":oidc-provider/{url}"):
            return provider["Arn"]
    return None


# -- destroy -------------------------------------------------------------------------

def destroy_cluster(ctx: StepContext) -> None:
    name = ctx.cfg.cluster.cluster_name
    cluster = find_cluster(ctx, name)
    if cluster is not None and not is_ours(ctx.cfg.name, cluster.get("tags")):
        cluster = None  # not ours: never delete it
    vpc_id = (cluster or {}).get("resourcesVpcConfig", {}).get("vpcId") or \
        ctx.upstream.get("network", {}).get("vpc_id")
    if vpc_id:
        from exaprov.steps.kubernetes_leftovers import delete_kubernetes_leftovers

        delete_kubernetes_leftovers(ctx, name, vpc_id)
    issuer = (cluster or {}).get("identity", {}).get("oidc", {}).get("issuer")
    if cluster is not None:
        ctx.delete("cluster", "eks:cluster", name, lambda n: _delete_and_wait(ctx, n))
    oidc_arn = find_oidc_provider(ctx, issuer.removeprefix("https://")) if issuer else \
        ctx.recorded_id("oidc-provider") or _tagged_oidc_provider(ctx)
    ctx.delete("oidc-provider", "iam:oidc-provider", oidc_arn,
               lambda arn: ctx.aws.client("iam").delete_open_id_connect_provider(
                   OpenIDConnectProviderArn=arn))
    for logical in ctx.recorded_logicals():
        ctx.forget(logical)


def _tagged_oidc_provider(ctx: StepContext) -> str | None:
    """The provider of a cluster already gone, found by its tags (state lost or stale)."""
    iam = ctx.aws.client("iam")
    for provider in ctx.call(iam.list_open_id_connect_providers)["OpenIDConnectProviderList"]:
        tags = ctx.call(lambda a=provider["Arn"]: iam.list_open_id_connect_provider_tags(
            OpenIDConnectProviderArn=a)).get("Tags", [])
        if is_ours(ctx.cfg.name, tags):
            return provider["Arn"]
    return None


def _delete_and_wait(ctx: StepContext, name: str) -> None:
    eks = ctx.aws.client("eks")
    try:
        eks.delete_cluster(name=name)
    except ClientError as exc:
        # Gone already, or a delete already under way (a destroy resumed after a crash).
        already = error_code(exc) == "ResourceInUseException" and "DELETING" in str(exc)
        if not (already or is_not_found(exc)):
            raise
    _wait_gone(ctx, name)


def _wait_gone(ctx: StepContext, name: str) -> None:
    eks = ctx.aws.client("eks")
    ctx.wait_gone(f"cluster {name}", lambda: eks.describe_cluster(name=name)["cluster"]["status"],
                  timeout=CLUSTER_DELETE_TIMEOUT, interval=5)


CLUSTER = Step("cluster", ("network", "iam", "kms", "logs", "security-groups"), ensure_cluster,
               destroy_cluster, title="EKS control plane")
