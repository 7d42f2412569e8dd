"""State addresses of things the user names, kept apart from exaprov's own.

A state address is `<step>.<logical name>`. Node groups and runner pools are named by the
user, so their logical names carry a prefix with a colon — `group:<name>` for a node group,
`lt:<name>` for its launch template — which no node group name can contain (the config
allows letters, digits, `-` and `_`). Whatever the user names a group (`lt-default`,
`asg-tags`), its records never equal exaprov's own. Peers (`pcx:<vpc-id>`,
`route:<rtb>:<cidr>`, `sg-rule:<vpc-id>`) and access entries (`entry:<arn>`) were
namespaced this way from the start.

States written before this scheme used the bare group name and `lt-<group>`; `migrate`
renames their records on load (by each record's kind, which tells a launch template from
a node group even where the two names were equal), so old state files keep working.
The resources' own `exaprov:resource` tags are not rewritten: lookups accept the old values.
"""

from __future__ import annotations

from typing import Any

GROUP_PREFIX = "group:"
TEMPLATE_PREFIX = "lt:"
NODE_GROUPS_STEP = "node-groups"
OLD_SUFFIX = "#old"  # the group being replaced, while its successor is made


def group_logical(name: str) -> str:
    return f"{GROUP_PREFIX}{name}"


def template_logical(name: str) -> str:
    return f"{TEMPLATE_PREFIX}{name}"


def group_from_tag(tag: str | None, name: str) -> str:
    """A node group's logical name from its `exaprov:resource` tag (old tags: the bare name)."""
    if not tag:
        return group_logical(name)
    return tag if tag.startswith(GROUP_PREFIX) else group_logical(tag)


def template_from_tag(tag: str | None, fallback: str) -> str:
    """A launch template's logical name from its tag (old tags: `lt-<group>`)."""
    if tag and tag.startswith(TEMPLATE_PREFIX):
        return tag
    if tag and tag.startswith("lt-"):
        return template_logical(tag.removeprefix("lt-"))
    return fallback


def legacy_template_tag(name: str) -> str:
    return f"lt-{name}"


def migrate(data: dict[str, Any]) -> bool:
    """Rename old node-group records in a state document, in place; True if any moved."""
    resources = data.get("resources")
    if not isinstance(resources, dict):
        return False
    prefix = NODE_GROUPS_STEP + "."
    moved = False
    for address in [a for a in resources if isinstance(a, str) and a.startswith(prefix)]:
        logical, record = address[len(prefix):], resources[address]
        if ":" in logical or not isinstance(record, dict):
            continue
        kind = record.get("kind")
        if kind == "ec2:launch-template" and logical.startswith("lt-"):
            new = template_logical(logical.removeprefix("lt-"))
        elif kind == "eks:nodegroup":
            new = group_logical(logical)
        else:
            continue  # exaprov's own (asg-tags) or unknown: left as it is
        if prefix + new not in resources:
            resources[prefix + new] = record
        del resources[address]
        moved = True
    return moved
