"""What Kubernetes made in the VPC and no tool recorded.

A LoadBalancer Service (ExaDeploy's Grafana is one) makes a load balancer and
security groups tagged for the cluster; they block deleting the VPC. The
cluster step's destroy calls this first, before the cluster goes away.
Removes: ELBv2 and classic load balancers in the VPC tagged
`kubernetes.io/cluster/<name>` or `elbv2.k8s.aws/cluster=<name>`, their target
groups, then security groups tagged for the cluster (not exaprov's own, not the
EKS-managed primary group, which goes with the cluster), after revoking the
rules in other groups that reference them.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from exaprov.aws import paginate, tag_dict
from exaprov.engine import TAG_DEPLOYMENT, StepContext
from exaprov.errors import error_code, is_not_found

LB_DELETE_TIMEOUT = 10 * 60
DEPENDENCY_TIMEOUT = 15 * 60


def _for_cluster(tags: dict[str, str], cluster: str) -> bool:
    return f"kubernetes.io/cluster/{cluster}" in tags or tags.get("elbv2.k8s.aws/cluster") == cluster


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def delete_kubernetes_leftovers(ctx: StepContext, cluster: str, vpc_id: str) -> None:
    _delete_elbv2(ctx, cluster, vpc_id)
    _delete_classic_elbs(ctx, cluster, vpc_id)
    _delete_security_groups(ctx, cluster, vpc_id)


def _delete_elbv2(ctx: StepContext, cluster: str, vpc_id: str) -> None:
    elbv2 = ctx.aws.client("elbv2")
    balancers = [lb["LoadBalancerArn"] for lb in ctx.call(
        lambda: paginate(elbv2, "describe_load_balancers", "LoadBalancers")) if lb.get("VpcId") == vpc_id]
    groups = [tg["TargetGroupArn"] for tg in ctx.call(
        lambda: paginate(elbv2, "describe_target_groups", "TargetGroups")) if tg.get("VpcId") == vpc_id]
    ours = _tagged_arns(ctx, elbv2, balancers + groups, cluster)
    for arn in [a for a in balancers if a in ours]:
        ctx.delete(f"k8s/{arn.rsplit('/', 2)[-2]}", "elbv2:load-balancer", arn,
                   lambda a: elbv2.delete_load_balancer(LoadBalancerArn=a))
        ctx.wait_until(f"load balancer {arn.rsplit('/', 2)[-2]} to delete",
                       lambda a=arn: _lb_exists(elbv2, a), lambda exists: not exists,
                       timeout=LB_DELETE_TIMEOUT, interval=10,
                       describe=lambda e: "deleting" if e else "deleted")
    for arn in [a for a in groups if a in ours]:
        ctx.delete(f"k8s/{arn.rsplit('/', 2)[-2]}", "elbv2:target-group", arn,
                   lambda a: ctx.retry_while(f"delete target group {a}",
                                             lambda: elbv2.delete_target_group(TargetGroupArn=a),
                                             {"ResourceInUse"}, timeout=LB_DELETE_TIMEOUT))


def _tagged_arns(ctx: StepContext, elbv2: Any, arns: list[str], cluster: str) -> set[str]:
    ours: set[str] = set()
    for chunk in _chunks(arns, 20):
        for desc in ctx.call(lambda c=chunk: elbv2.describe_tags(ResourceArns=c))["TagDescriptions"]:
            if _for_cluster(tag_dict(desc.get("Tags")), cluster):
                ours.add(desc["ResourceArn"])
    return ours


def _lb_exists(elbv2: Any, arn: str) -> bool:
    try:
        return bool(elbv2.describe_load_balancers(LoadBalancerArns=[arn])["LoadBalancers"])
    except ClientError as exc:
        if is_not_found(exc) or error_code(exc) == "LoadBalancerNotFound":
            return False
        raise


def _delete_classic_elbs(ctx: StepContext, cluster: str, vpc_id: str) -> None:
    elb = ctx.aws.client("elb")
    names = [lb["LoadBalancerName"] for lb in ctx.call(
        lambda: paginate(elb, "describe_load_balancers", "LoadBalancerDescriptions"))
        if lb.get("VPCId") == vpc_id]
    for chunk in _chunks(names, 20):
        for desc in ctx.call(lambda c=chunk: elb.describe_tags(LoadBalancerNames=c))["TagDescriptions"]:
            if _for_cluster(tag_dict(desc.get("Tags")), cluster):
                ctx.delete(f"k8s/{desc['LoadBalancerName']}", "elb:load-balancer",
                           desc["LoadBalancerName"],
                           lambda n: elb.delete_load_balancer(LoadBalancerName=n))


def _delete_security_groups(ctx: StepContext, cluster: str, vpc_id: str) -> None:
    ec2 = ctx.aws.ec2
    # The in-tree controller tags kubernetes.io/cluster/<name>; the AWS Load Balancer
    # Controller may tag only elbv2.k8s.aws/cluster=<name>.
    by_id: dict[str, dict[str, Any]] = {}
    for tag_filter in ({"Name": "tag-key", "Values": [f"kubernetes.io/cluster/{cluster}"]},
                       {"Name": "tag:elbv2.k8s.aws/cluster", "Values": [cluster]}):
        for group in ctx.call(lambda f=tag_filter: paginate(
                ec2, "describe_security_groups", "SecurityGroups",
                Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, f])):
            by_id[group["GroupId"]] = group
    for group in by_id.values():
        tags = tag_dict(group.get("Tags"))
        # Read back, not assumed from the filters: in this cluster's VPC, made for this cluster.
        if group.get("VpcId") != vpc_id or not _for_cluster(tags, cluster):
            continue
        if TAG_DEPLOYMENT in tags or "aws:eks:cluster-name" in tags:
            continue  # exaprov's own groups, and the primary group EKS deletes itself
        group_id = group["GroupId"]
        ctx.delete(f"k8s/{group_id}", "ec2:security-group", group_id,
                   lambda g: (_revoke_references(ctx, vpc_id, g), ctx.retry_while(
                       f"delete security group {g}", lambda: ec2.delete_security_group(GroupId=g),
                       {"DependencyViolation"}, timeout=DEPENDENCY_TIMEOUT)))


def _revoke_references(ctx: StepContext, vpc_id: str, group_id: str) -> None:
    """Rules in other groups naming this one would keep it from being deleted."""
    ec2 = ctx.aws.ec2
    referencing = paginate(ec2, "describe_security_groups", "SecurityGroups", Filters=[
        {"Name": "vpc-id", "Values": [vpc_id]},
        {"Name": "ip-permission.group-id", "Values": [group_id]}])
    for other in referencing:
        if other.get("VpcId") != vpc_id:
            continue
        rules = [r for r in paginate(ec2, "describe_security_group_rules", "SecurityGroupRules",
                                     Filters=[{"Name": "group-id", "Values": [other["GroupId"]]}])
                 if r.get("ReferencedGroupInfo", {}).get("GroupId") == group_id]
        ingress = [r["SecurityGroupRuleId"] for r in rules if not r["IsEgress"]]
        egress = [r["SecurityGroupRuleId"] for r in rules if r["IsEgress"]]
        if ingress:
            ec2.revoke_security_group_ingress(GroupId=other["GroupId"], SecurityGroupRuleIds=ingress)
        if egress:
            ec2.revoke_security_group_egress(GroupId=other["GroupId"], SecurityGroupRuleIds=egress)
