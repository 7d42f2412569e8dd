"""Invalid configs, one rule each, for the config tests and the CLI tests (exit 2, no AWS call).

BAD_CONFIGS: (case id, config mapping, key path the error line must start with).
BAD_YAML_TEXTS: (case id, file text, text the one error line must contain).
"""

from __future__ import annotations

from typing import Any

# A valid runner pool to vary one key at a time.
POOL: dict[str, Any] = {
    "suffix": "cpu", "node_instance_category": "cpu", "capacity_type": "SPOT",
    "node_instance_type": "m5.xlarge", "disk_size": 100, "min_size": 1, "max_size": 4,
}
GROUP: dict[str, Any] = {"node_instance_type": "c5.xlarge", "min_size": 0, "max_size": 2}
ADMIN_ARN = "arn:aws:iam::111122223333:role/admin"


def _pool(**changes: Any) -> dict[str, Any]:
    return {**POOL, **changes}


def _cluster(**keys: Any) -> dict[str, Any]:
    return {"name": "example", "cluster": keys}


def _network(**keys: Any) -> dict[str, Any]:
    return {"name": "example", "network": keys}


def _backend(**keys: Any) -> dict[str, Any]:
    return {"name": "example", "module_repo_backend": keys}


BAD_CONFIGS: list[tuple[str, dict[str, Any], str]] = [
    # top level
    ("name-missing", {"region": "us-west-1"}, "name"),
    ("name-uppercase", {"name": "Prod"}, "name"),
    ("name-trailing-hyphen", {"name": "prod-"}, "name"),
    ("name-number", {"name": 42}, "name"),
    ("name-too-long-for-derived-cluster", {"name": "averylongname"}, "name"),
    ("name-too-long-for-derived-backend", {"name": "a" * 30, "cluster": {"cluster_name": "c"}},
     "name"),
    ("unknown-top-level-key", {"name": "example", "regoin": "us-east-1"}, "regoin"),
    ("region-bad", {"name": "example", "region": "US-WEST-1"}, "region"),
    ("region-az-not-region", {"name": "example", "region": "us-west-1a"}, "region"),
    ("region-unknown", {"name": "example", "region": "us-west-9"}, "region"),
    ("region-shape-unknown", {"name": "example", "region": "xx-fake-1"}, "region"),
    ("tags-list-for-dict", {"name": "example", "tags": ["owner", "me"]}, "tags"),
    ("tags-null", {"name": "example", "tags": None}, "tags"),
    ("tag-key-aws", {"name": "example", "tags": {"aws:createdBy": "me"}}, "tags['aws:createdBy']"),
    ("tag-key-exaprov", {"name": "example", "tags": {"exaprov:deployment": "x"}},
     "tags['exaprov:deployment']"),
    ("tag-value-too-long", {"name": "example", "tags": {"owner": "x" * 257}}, "tags.owner"),
    ("tag-value-number", {"name": "example", "tags": {"cost": 42}}, "tags.cost"),
    ("too-many-tags", {"name": "example", "tags": {f"t{i}": "v" for i in range(41)}}, "tags"),
    ("state-s3-no-key", {"name": "example", "state": "s3://bucket"}, "state"),
    ("state-empty", {"name": "example", "state": ""}, "state"),
    # network
    ("network-not-mapping", {"name": "example", "network": ["10.0.0.0/16"]}, "network"),
    ("network-unknown-key", _network(vpc_cidr_bloc="10.0.0.0/16"), "network.vpc_cidr_bloc"),
    ("vpc-name-bad-chars", _network(vpc_name="my_vpc!"), "network.vpc_name"),
    ("vpc-name-too-short", _network(vpc_name="ab"), "network.vpc_name"),
    ("cidr-host-bits", _network(vpc_cidr_block="10.255.1.0/16"), "network.vpc_cidr_block"),
    ("cidr-too-small", _network(vpc_cidr_block="10.255.0.0/25"), "network.vpc_cidr_block"),
    ("cidr-too-large", _network(vpc_cidr_block="10.0.0.0/8"), "network.vpc_cidr_block"),
    ("cidr-ipv6", _network(vpc_cidr_block="fd00::/56"), "network.vpc_cidr_block"),
    ("cidr-not-cidr", _network(vpc_cidr_block="ten.dot.zero"), "network.vpc_cidr_block"),
    ("cidr-no-prefix", _network(vpc_cidr_block="10.255.0.0"), "network.vpc_cidr_block"),
    # cluster
    ("cluster-unknown-key", _cluster(clustername="x"), "cluster.clustername"),
    ("cluster-name-too-long", _cluster(cluster_name="c" * 30), "cluster.cluster_name"),
    ("cluster-name-bad-chars", _cluster(cluster_name="my_cluster"), "cluster.cluster_name"),
    ("version-unquoted-float", _cluster(cluster_version=1.3), "cluster.cluster_version"),
    ("version-unsupported", _cluster(cluster_version="1.22"), "cluster.cluster_version"),
    ("public-cidrs-empty", _cluster(endpoint_public_access_cidrs=[]),
     "cluster.endpoint_public_access_cidrs"),
    ("public-cidr-host-bits", _cluster(endpoint_public_access_cidrs=["0.0.0.0/0", "1.2.3.4/8"]),
     "cluster.endpoint_public_access_cidrs[1]"),
    ("retention-91", _cluster(log_retention_in_days=91), "cluster.log_retention_in_days"),
    ("retention-string", _cluster(log_retention_in_days="ninety"),
     "cluster.log_retention_in_days"),
    ("kms-admin-bad-arn", _cluster(kms_key_administrators=["arn:aws:iam::123:user/x"]),
     "cluster.kms_key_administrators[0]"),
    ("instance-tag-aws", _cluster(instance_tags={"aws:x": "y"}), "cluster.instance_tags['aws:x']"),
    ("asg-tags-list", _cluster(autoscaling_group_tags=["a"]), "cluster.autoscaling_group_tags"),
    ("runner-pools-dict", _cluster(runner_pools={"cpu": POOL}), "cluster.runner_pools"),
    ("pool-unknown-key", _cluster(runner_pools=[_pool(instance_type="m5.large")]),
     "cluster.runner_pools[0].instance_type"),
    ("pool-missing-suffix", _cluster(runner_pools=[{k: v for k, v in POOL.items()
                                                    if k != "suffix"}]),
     "cluster.runner_pools[0].suffix"),
    ("pool-category", _cluster(runner_pools=[_pool(node_instance_category="tpu")]),
     "cluster.runner_pools[0].node_instance_category"),
    ("pool-capacity-lowercase", _cluster(runner_pools=[POOL, _pool(suffix="b",
                                                                   capacity_type="spot")]),
     "cluster.runner_pools[1].capacity_type"),
    ("pool-instance-type", _cluster(runner_pools=[_pool(node_instance_type="xlarge")]),
     "cluster.runner_pools[0].node_instance_type"),
    ("pool-instance-type-unknown", _cluster(runner_pools=[_pool(node_instance_type="foo.bar")]),
     "cluster.runner_pools[0].node_instance_type"),
    ("pool-instance-size-unknown", _cluster(runner_pools=[_pool(node_instance_type="m5.huge")]),
     "cluster.runner_pools[0].node_instance_type"),
    ("pool-gpu-on-cpu-type", _cluster(runner_pools=[_pool(node_instance_category="gpu",
                                                          node_instance_type="m5.large")]),
     "cluster.runner_pools[0].node_instance_category"),
    ("pool-inferentia-on-gpu-type", _cluster(runner_pools=[_pool(
        node_instance_category="inferentia", node_instance_type="g4dn.xlarge")]),
     "cluster.runner_pools[0].node_instance_category"),
    ("pool-cpu-on-gpu-type", _cluster(runner_pools=[_pool(node_instance_type="g5.xlarge")]),
     "cluster.runner_pools[0].node_instance_category"),
    ("pool-max-over-quota", _cluster(runner_pools=[_pool(max_size=451)]),
     "cluster.runner_pools[0].max_size"),
    ("pool-disk-fraction", _cluster(runner_pools=[_pool(disk_size=100.5)]),
     "cluster.runner_pools[0].disk_size"),
    ("too-many-node-groups", _cluster(runner_pools=[_pool(suffix=f"p{i}") for i in range(27)]),
     "cluster.runner_pools"),
    ("group-instance-type-unknown", _cluster(additional_node_groups={
        "big": {**GROUP, "node_instance_type": "c5.huge"}}),
     "cluster.additional_node_groups.big.node_instance_type"),
    ("pool-disk-zero", _cluster(runner_pools=[_pool(disk_size=0)]),
     "cluster.runner_pools[0].disk_size"),
    ("pool-min-negative", _cluster(runner_pools=[_pool(min_size=-1)]),
     "cluster.runner_pools[0].min_size"),
    ("pool-max-zero", _cluster(runner_pools=[_pool(min_size=0, max_size=0)]),
     "cluster.runner_pools[0].max_size"),
    ("pool-min-above-max", _cluster(runner_pools=[_pool(min_size=5, max_size=2)]),
     "cluster.runner_pools[0].max_size"),
    ("pool-size-string", _cluster(runner_pools=[_pool(max_size="four")]),
     "cluster.runner_pools[0].max_size"),
    ("pool-size-bool", _cluster(runner_pools=[_pool(max_size=True)]),
     "cluster.runner_pools[0].max_size"),
    ("pool-duplicate-suffix", _cluster(runner_pools=[POOL, _pool(capacity_type="ON_DEMAND")]),
     "cluster.runner_pools[1].suffix"),
    ("pool-bad-suffix", _cluster(runner_pools=[_pool(suffix="GPU_big")]),
     "cluster.runner_pools[0].suffix"),
    ("pool-suffix-too-long", _cluster(runner_pools=[_pool(suffix="s" * 57)]),
     "cluster.runner_pools[0].suffix"),
    ("pool-accelerator-label", _cluster(runner_pools=[_pool(accelerator_label="nvidia tesla")]),
     "cluster.runner_pools[0].accelerator_label"),
    ("taint-effect", _cluster(runner_pools=[_pool(additional_taints=[
        {"key": "team", "value": "ml", "effect": "NoSchedule"}])]),
     "cluster.runner_pools[0].additional_taints[0].effect"),
    ("taint-bad-key", _cluster(runner_pools=[_pool(additional_taints=[
        {"key": "-team", "effect": "NO_SCHEDULE"}])]),
     "cluster.runner_pools[0].additional_taints[0].key"),
    ("taint-unknown-key", _cluster(runner_pools=[_pool(additional_taints=[
        {"key": "team", "effect": "NO_SCHEDULE", "operator": "Equal"}])]),
     "cluster.runner_pools[0].additional_taints[0].operator"),
    ("label-bad-key", _cluster(runner_pools=[_pool(additional_labels={"Example.com/team": "ml"})]),
     "cluster.runner_pools[0].additional_labels['Example.com/team']"),
    ("label-bad-value", _cluster(runner_pools=[_pool(additional_labels={"team": "m l"})]),
     "cluster.runner_pools[0].additional_labels.team"),
    ("group-collides-system", _cluster(additional_node_groups={"scheduler": GROUP}),
     "cluster.additional_node_groups.scheduler"),
    ("group-collides-runner", _cluster(additional_node_groups={"runner-gpu": GROUP}),
     "cluster.additional_node_groups.runner-gpu"),
    ("group-bad-name", _cluster(additional_node_groups={"big group": GROUP}),
     "cluster.additional_node_groups['big group']"),
    ("group-has-suffix", _cluster(additional_node_groups={"big": {**GROUP, "suffix": "x"}}),
     "cluster.additional_node_groups.big.suffix"),
    ("aws-auth-role-user-arn", _cluster(aws_auth_roles=[
        {"rolearn": "arn:aws:iam::111122223333:user/ana", "username": "ana"}]),
     "cluster.aws_auth_roles[0].rolearn"),
    ("aws-auth-user-empty-name", _cluster(aws_auth_users=[
        {"userarn": "arn:aws:iam::111122223333:user/ana", "username": ""}]),
     "cluster.aws_auth_users[0].username"),
    ("aws-auth-reserved-username", _cluster(aws_auth_users=[
        {"userarn": "arn:aws:iam::111122223333:user/ana", "username": "eks:ana"}]),
     "cluster.aws_auth_users[0].username"),
    ("aws-auth-system-group", _cluster(aws_auth_roles=[
        {"rolearn": "arn:aws:iam::111122223333:role/nodes", "username": "n",
         "groups": ["system:bootstrappers"]}]),
     "cluster.aws_auth_roles[0].groups"),
    ("imds-hop-limit", _cluster(imds_hop_limit=0), "cluster.imds_hop_limit"),
    # module_repo_backend
    ("backend-string", {"name": "example", "module_repo_backend": "local"},
     "module_repo_backend"),
    ("backend-unknown-key", _backend(db_password="hunter2"), "module_repo_backend.db_password"),
    ("backend-id-bad", _backend(exadeploy_id="My_Backend"), "module_repo_backend.exadeploy_id"),
    ("backend-id-too-long", _backend(exadeploy_id="b" * 43), "module_repo_backend.exadeploy_id"),
    ("db-storage-small", _backend(db_storage=4), "module_repo_backend.db_storage"),
    ("postgres-minor", _backend(postgres_version="16.3"), "module_repo_backend.postgres_version"),
    ("postgres-float", _backend(postgres_version=16.3), "module_repo_backend.postgres_version"),
    ("postgres-old", _backend(postgres_version="9"), "module_repo_backend.postgres_version"),
    ("postgres-leading-zero", _backend(postgres_version="016"),
     "module_repo_backend.postgres_version"),
    ("db-username-reserved", _backend(db_username="rdsadmin"), "module_repo_backend.db_username"),
    ("db-username-bad", _backend(db_username="1user"), "module_repo_backend.db_username"),
    ("db-port-range", _backend(db_port=80), "module_repo_backend.db_port"),
    ("db-instance-class", _backend(db_instance_class="t4g.micro"),
     "module_repo_backend.db_instance_class"),
    ("encrypted-string", _backend(db_storage_encrypted="yes"),
     "module_repo_backend.db_storage_encrypted"),
    ("db-storage-type", _backend(db_storage_type="standard"), "module_repo_backend.db_storage_type"),
    ("db-max-storage-small", _backend(db_max_allocated_storage=15),
     "module_repo_backend.db_max_allocated_storage"),
    ("db-backup-days", _backend(db_backup_retention_days=36),
     "module_repo_backend.db_backup_retention_days"),
    ("db-rotation-days", _backend(db_password_rotation_days=0),
     "module_repo_backend.db_password_rotation_days"),
    ("db-protection-string", _backend(db_deletion_protection="no"),
     "module_repo_backend.db_deletion_protection"),
]

BAD_YAML_TEXTS: list[tuple[str, str, str]] = [
    ("syntax-error", "name: example\ncluster:\n  cluster_name: [a, b\n", "line"),
    ("bad-indent", "name: example\n  region: us-west-1\n", "line 2"),
    ("tab-indent", "name: example\ncluster:\n\tcluster_name: x\n", "line 3"),
    ("top-level-list", "- name: example\n", "mapping"),
    ("top-level-scalar", "example\n", "mapping"),
    ("empty-file", "", "empty"),
    ("only-comments", "# nothing here\n", "empty"),
    ("duplicate-key", "name: example\nregion: us-west-1\nname: other\n", "duplicate key 'name'"),
    ("yaml11-octal", "name: example\nmodule_repo_backend:\n  db_port: 05432\n",
     "module_repo_backend.db_port: 05432 (line 3) has a leading zero"),
    ("yaml11-base-60", "name: example\nmodule_repo_backend:\n  db_port: 1:30:00\n",
     "base-60"),
    ("yaml11-binary", "name: example\nmodule_repo_backend:\n  db_port: 0b101\n", "binary"),
    ("yaml-deep", "name: example\ncluster: " + "[" * 100 + "]" * 100 + "\n",
     "nested deeper than 32 levels"),
    ("yaml-alias-bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n" for a, b in zip("abcd", "bcde", strict=True)),
     "expands to more than 5000 keys and values"),
    ("yaml-bad-merge", "name: example\ncluster:\n  <<: 5\n", "merging"),
    ("yaml-mapping-as-key", "? name: example\n", "a key must be text, not a dict"),
]
