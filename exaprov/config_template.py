"""The config file `exaprov init` writes: every key with its default and a one-line comment.

Hand-written so it reads like a real deployment's config; tests check that it loads back to the defaults
and that it names every field of the config models, so a new key cannot be forgotten here.
"""

from __future__ import annotations

import json
from string import Template

import yaml

_HEADER = """\
# exaprov config. Every key but `name` has a default; a key exaprov does not know is an error.
"""

_MINIMAL = """\
name: $name  # the deployment; resource names and tags derive from it
region: $region  # the AWS region to build in
# Every other key has its default; `exaprov init` can write them all out for you to change.
"""

_FULL = """\
name: $name  # the deployment; resource names and tags derive from it
region: $region  # the AWS region to build in
tags: {owner: exafunction}  # on every resource exaprov creates; no aws: or exaprov: keys
network:
  vpc_name: $vpc_name  # 3-63 letters, digits and hyphens
  vpc_cidr_block: 10.255.0.0/16  # IPv4, /16 to /24; nine /(prefix+4) subnets are cut from it
cluster:
  cluster_name: $cluster_name  # EKS cluster, at most 29 characters
  cluster_version: "$cluster_version"  # Kubernetes version, quoted (YAML reads 1.30 as 1.3)
  endpoint_public_access_cidrs: [0.0.0.0/0]  # who may reach the public API endpoint
  log_retention_in_days: 90  # control-plane logs; a value CloudWatch Logs allows
  kms_key_administrators: []  # extra IAM ARNs that administer the secrets KMS key
  instance_tags: {owner: exafunction}  # on node instances and their volumes
  autoscaling_group_tags: {owner: exafunction}  # on every node group's autoscaling group
  runner_pools:  # one EKS node group runner-<suffix> per pool
    - suffix: cpu  # unique; lowercase letters, digits, hyphens
      node_instance_category: cpu  # cpu | gpu | inferentia (picks the AMI)
      capacity_type: SPOT  # ON_DEMAND | SPOT
      node_instance_type: m5.xlarge  # EC2 instance type
      disk_size: 100  # root volume, GiB
      min_size: 1  # the autoscaler never goes below this
      max_size: 4  # nor above this
      accelerator_label: ""  # value of label k8s.amazonaws.com/accelerator, "" for none
      additional_taints: []  # e.g. [{key: team, value: ml, effect: NO_SCHEDULE}]
      additional_labels: {}  # e.g. {team: ml}
      max_unavailable_percentage: 33  # nodes EKS may replace at once in a rolling update, %
      node_repair: null  # EKS node auto repair; null = on for gpu and inferentia pools
    - suffix: gpu
      node_instance_category: gpu
      capacity_type: ON_DEMAND
      node_instance_type: g4dn.xlarge
      disk_size: 100
      min_size: 0  # 0 = scale from zero
      max_size: 3
      accelerator_label: nvidia-tesla-t4
      additional_taints: []
      additional_labels: {}
      max_unavailable_percentage: 33
      node_repair: null
  additional_node_groups: {}  # name -> the knobs of a runner pool, minus suffix
  aws_auth_roles: []  # IAM roles given cluster access: [{rolearn, username, groups}]
  aws_auth_users: []  # IAM users given cluster access: [{userarn, username, groups}]
  imds_hop_limit: 1  # IMDSv2 hop limit on the nodes; 2 lets pods without IRSA reach IMDS
  detailed_monitoring: true  # one-minute EC2 metrics of the nodes
  support_type: STANDARD  # at the end of standard support: STANDARD = EKS upgrades the control
                          # plane; EXTENDED = it stays, at $$0.60 instead of $$0.10 per hour
  deletion_protection: true  # EKS refuses DeleteCluster; destroy --disable-deletion-protection
  addons: {}  # managed add-ons: name -> version, or null for EKS's default, e.g. {coredns: null}
module_repo_backend:  # `module_repo_backend: null` = local backend, no RDS or S3
  exadeploy_id: $exadeploy_id  # names the RDS instance, S3 bucket and IAM user
  db_storage: 20  # RDS storage, GiB (20 to 65536 on gp3)
  postgres_version: "16"  # major version only; minor versions follow AWS auto-upgrades
  db_username: exafunction  # RDS master user; RDS keeps its password in Secrets Manager
  db_port: 5432  # 1150-65535
  db_instance_class: db.t4g.micro  # RDS instance class
  db_storage_encrypted: true  # encrypt the database storage
  db_storage_type: gp3  # gp3 | gp2
  db_max_allocated_storage: 100  # storage autoscaling ceiling, GiB; 0 = off
  db_backup_retention_days: 7  # automated backups, 0-35 days
  db_deletion_protection: true  # `destroy --disable-deletion-protection` lifts it
  db_extended_support: false  # false: never enrolled in (billed) RDS Extended Support
  db_password_rotation_days: null  # null = the password never changes under its consumer
state: null  # where exaprov keeps its state: a file path or s3://bucket/key; null = default
"""


def _scalar(text: str) -> str:
    """`text` as a YAML scalar, quoted only when YAML would read it as something else."""
    return text if yaml.safe_load(text) == text else json.dumps(text)


def render_config(name: str = "example", region: str = "us-west-1", full: bool = True,
                  cluster_version: str | None = None) -> str:
    """The config text for a new deployment `name`, derived names filled in."""
    from exaprov.config import DEFAULT_KUBERNETES_VERSION

    version = cluster_version or DEFAULT_KUBERNETES_VERSION
    text = _FULL if full else _MINIMAL
    if not full and version != DEFAULT_KUBERNETES_VERSION:
        text += f'cluster: {{cluster_version: "{version}"}}  # Kubernetes: newest in EKS standard support\n'
    body = Template(text).substitute(
        cluster_version=version,
        name=_scalar(name),
        region=_scalar(region),
        vpc_name=_scalar(f"exafunction-vpc-{name}"),
        cluster_name=_scalar(f"exafunction-cluster-{name}"),
        exadeploy_id=_scalar(f"exafunction-mrbe-{name}"),
    )
    return _HEADER + body
