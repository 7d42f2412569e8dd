"""The module repository's object storage, as two steps.

`backend-user` owns the IAM user `<exadeploy_id>-user` (path `/exafunction/`), its
ONE access key, and the Secrets Manager secret `exaprov/<name>/s3-user-secret-access-key`
that holds the key as JSON `{"access_key_id", "secret_access_key"}`. The secret access
key exists only in the CreateAccessKey response, so it is written to the secret in the
very next call and nowhere else: not to state, not to a log, not to an error message.
The state keeps the secret's ARN and the access key ID only.

Crash safety: every run lists the user's keys and keeps only the one whose
ID the secret holds; every other key (left by a crash between CreateAccessKey and
PutSecretValue, or made by hand) is deleted BEFORE a new key is made, so the user never
reaches AWS's limit of two keys. No stored key (no secret, secret emptied or deleted, its
key gone) → a new key is made and stored: a rotation. The secret is created empty first
and the key goes in with PutSecretValue (ClientRequestToken derived from the key ID, so a
retried put is the same version). A user of that name that neither carries this
deployment's tag nor is the user the state records is someone else's: refused, untouched.

`bucket` owns the S3 bucket `module-repo-<exadeploy_id>-<8 random a-z0-9>`. The suffix is
drawn once and written into the create intent before CreateBucket, so a crashed create is
retried under the same name; the bucket is found by its recorded name (intent included),
else by listing `module-repo-<exadeploy_id>-*` and reading each one's tags (adopted, never
a second bucket). It is created with bucket-owner-enforced ownership (and its tags, where
S3 takes them in CreateBucketConfiguration), then gets its tags, all four public-access
blocks, SSE-S3 default encryption and its policy. Each of these is reconciled on every run.
The policy allows the backend user s3:GetObject/PutObject/DeleteObject on the objects and
s3:ListBucket on the bucket, and denies every request not made over TLS; that Deny is the
only statement with a `*` principal (a Deny cannot grant anything).

Reads: `backend-user` nothing upstream; `bucket` reads backend-user's `iam_user_arn`.
Records: backend-user.user (id = ARN, with name and user_id), backend-user.secret (id =
ARN, with name), backend-user.access-key (id = access key ID); bucket.bucket (id = name,
with region). Destroy order: bucket (emptied of every object version and delete marker,
then deleted) → backend-user: access keys → user → secret (deleted at once against a
local endpoint, else scheduled with the minimum 7-day recovery window). Both work without
state: the user and secret by name, the bucket by prefix and tags.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from exaprov.aws import paginate, tag_dict, tag_list
from exaprov.engine import TAG_COMPONENT, TAG_DEPLOYMENT, TAG_RESOURCE, Step, StepContext, unknown
from exaprov.errors import AwsError, InputError, error_code, ignore_not_found, is_not_found
from exaprov.ownership import clash, is_ours
from exaprov.state import CREATED
from exaprov.steps.iam import normalise_policy, partition

USER_KIND = "iam:user"
KEY_KIND = "iam:access-key"
SECRET_KIND = "secretsmanager:secret"
BUCKET_KIND = "s3:bucket"
USER_PATH = "/exafunction/"
RECOVERY_WINDOW_DAYS = 7  # the minimum Secrets Manager allows
SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
SUFFIX_LENGTH = 8
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
COUNT_LIMIT = 100_000  # object versions counted for the destroy's DATA LOSS line
PUBLIC_ACCESS_BLOCKS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                        "RestrictPublicBuckets")
OWNERSHIP = "BucketOwnerEnforced"
SSE_ALGORITHM = "AES256"
NO_BUCKET_CODES = frozenset({"404", "NoSuchBucket", "NotFound"})
STALE_KEY = "stale-access-key"  # a key exaprov deletes: not the one in the secret


def _or_none(ctx: StepContext, call: Callable[[], Any], codes: frozenset[str] = frozenset()) -> Any:
    """The call's result, or None when AWS says the thing is not there."""
    try:
        return ctx.call(call)
    except AwsError as exc:
        cause = exc.__cause__
        if cause is not None and (is_not_found(cause) or error_code(cause) in codes):
            return None
        raise


def _tag_text(tags: dict[str, str]) -> str:
    return "tags " + ", ".join(f"{k}={v}" for k, v in sorted(tags.items()))


# -- step: backend-user -------------------------------------------------------------------

def user_name(ctx: StepContext) -> str:
    return f"{ctx.cfg.backend_id}-user"


def secret_name(ctx: StepContext) -> str:
    return f"exaprov/{ctx.cfg.name}/s3-user-secret-access-key"


def find_user(ctx: StepContext, name: str) -> dict[str, Any] | None:
    iam = ctx.aws.client("iam")
    found = _or_none(ctx, lambda: iam.get_user(UserName=name))
    if found is None:
        return None
    user: dict[str, Any] = found["User"]
    if "Tags" not in user:  # GetUser returns tags; be safe with endpoints that do not
        user["Tags"] = ctx.call(lambda: paginate(iam, "list_user_tags", "Tags", UserName=name))
    return user


def user_is_ours(ctx: StepContext, user: dict[str, Any]) -> bool:
    """Tagged for this deployment, or the very user (same unique UserId) the state records."""
    rec = ctx.recorded("user") or {}
    return is_ours(ctx.cfg.name, user.get("Tags"), recorded_id=rec.get("id") == user["Arn"]
                   and rec.get("user_id") == user["UserId"])


def find_secret(ctx: StepContext) -> dict[str, Any] | None:
    """The secret by name (a secret scheduled for deletion included: it carries DeletedDate)."""
    sm = ctx.aws.client("secretsmanager")
    return _or_none(ctx, lambda: sm.describe_secret(SecretId=secret_name(ctx)))


def secret_is_ours(ctx: StepContext, secret: dict[str, Any]) -> bool:
    if is_ours(ctx.cfg.name, secret.get("Tags")):
        return True
    return secret["ARN"] == ctx.recorded_id("secret")


def stored_key_id(ctx: StepContext, secret_arn: str) -> str | None:
    """The access key ID the secret holds, or None (no value yet, not JSON, marked deleted).

    GetSecretValue is the only way to read it; the secret access key in the same document
    is dropped at once.
    """
    sm = ctx.aws.client("secretsmanager")
    found = _or_none(ctx, lambda: sm.get_secret_value(SecretId=secret_arn),
                     frozenset({"InvalidRequestException"}))
    if found is None:
        return None
    try:
        key_id = json.loads(found.get("SecretString") or "{}").get("access_key_id")
    except (ValueError, AttributeError):
        return None
    return key_id if isinstance(key_id, str) else None


def current_version_key(secret: dict[str, Any], keys: list[dict[str, Any]]) -> str | None:
    """The access key whose value exaprov stored as the secret's current version, known
    without reading the value: PutSecretValue's token (the version ID) is derived from the
    key ID. None if the current version is not one of these keys' (then read the value)."""
    current = [v for v, stages in (secret.get("VersionIdsToStages") or {}).items()
               if "AWSCURRENT" in stages]
    for key in keys:
        if current == [_version_token(key["AccessKeyId"])]:
            return str(key["AccessKeyId"])
    return None


def _version_token(key_id: str) -> str:
    """PutSecretValue's ClientRequestToken (32-64 characters): one version per access key."""
    return hashlib.sha256(f"exaprov:{key_id}".encode()).hexdigest()


def ensure_backend_user(ctx: StepContext) -> dict[str, Any]:
    iam, sm = ctx.aws.client("iam"), ctx.aws.client("secretsmanager")
    name, sname = user_name(ctx), secret_name(ctx)

    # The user.
    tags = ctx.tags("user", name=name)
    user = find_user(ctx, name)
    live_keys: list[dict[str, Any]] = []
    if user is None:
        created: dict[str, Any] = {}

        def create_user(token: str) -> str:
            created.update(iam.create_user(UserName=name, Path=USER_PATH, Tags=tag_list(tags))["User"])
            return str(created["Arn"])

        arn = ctx.create("user", USER_KIND, create_user, detail=f"path {USER_PATH}", name=name)
        if not ctx.planning:
            ctx.run.writer.record(ctx.address("user"), name=name, user_id=created["UserId"])
    else:
        if not user_is_ours(ctx, user):
            raise InputError(
                f"backend-user: the IAM user {name} ({user['Arn']}) already exists and does not "
                f"belong to deployment {ctx.cfg.name!r} (no {TAG_DEPLOYMENT}={ctx.cfg.name} tag); "
                "exaprov never takes over a user it did not create",
                hint="choose another module_repo_backend.exadeploy_id, or delete or rename that user")
        arn = ctx.found("user", USER_KIND, user["Arn"], name=name, user_id=user["UserId"])
        if user.get("Path") != USER_PATH:
            ctx.update("user", USER_KIND, f"path {user.get('Path')} → {USER_PATH}",
                       lambda: iam.update_user(UserName=name, NewPath=USER_PATH))
            arn = arn[:arn.index(":user/") + len(":user")] + USER_PATH + name
            if not ctx.planning:
                ctx.run.writer.record(ctx.address("user"), id=arn)
        missing = {k: v for k, v in tags.items() if tag_dict(user.get("Tags")).get(k) != v}
        if missing:
            ctx.update("user", USER_KIND, _tag_text(missing),
                       lambda: iam.tag_user(UserName=name, Tags=tag_list(missing)))
        live_keys = ctx.call(lambda: paginate(iam, "list_access_keys", "AccessKeyMetadata",
                                              UserName=name))

    # The secret that holds the key.
    secret_tags = ctx.tags("secret", name=sname)
    secret = find_secret(ctx)
    stored: str | None = None
    if secret is None:
        def create_secret(token: str) -> str:
            # Empty: the key goes in with PutSecretValue the moment it exists.
            return str(sm.create_secret(
                Name=sname, Tags=tag_list(secret_tags),
                Description=f"exaprov {ctx.cfg.name}: access key of IAM user {name}")["ARN"])

        secret_arn = ctx.create("secret", SECRET_KIND, create_secret, name=sname,
                                detail=f"holds the secret access key of {name}")
    else:
        if not secret_is_ours(ctx, secret):
            raise InputError(
                f"backend-user: the secret {sname} ({secret['ARN']}) already exists and does not "
                f"belong to deployment {ctx.cfg.name!r}; exaprov never takes over a secret it did "
                "not create", hint="delete that secret, or choose another deployment name")
        deleted = bool(secret.get("DeletedDate"))
        secret_arn = ctx.found("secret", SECRET_KIND, secret["ARN"], name=sname,
                               live="scheduled for deletion" if deleted else "available")
        if deleted:
            ctx.update("secret", SECRET_KIND, "restore it: it is scheduled for deletion",
                       lambda: sm.restore_secret(SecretId=secret_arn))
        live_tags = tag_dict(secret.get("Tags"))
        missing = {k: v for k, v in secret_tags.items() if live_tags.get(k) != v}
        if missing:
            ctx.update("secret", SECRET_KIND, _tag_text(missing),
                       lambda: sm.tag_resource(SecretId=secret_arn, Tags=tag_list(missing)))
        if deleted and ctx.planning:
            stored = ctx.recorded_id("access-key")  # unreadable until `up` restores it
        else:
            stored = current_version_key(secret, live_keys) or stored_key_id(ctx, secret_arn)

    # The one access key: the one the secret holds, if the user still has it.
    kept = next((k for k in live_keys if k["AccessKeyId"] == stored), None)
    for key in live_keys:
        if key is not kept:
            why = ("not the key stored in the secret: left by a crash between CreateAccessKey "
                   "and storing its secret, or made by hand")
            ctx.delete(STALE_KEY, KEY_KIND, key["AccessKeyId"],
                       lambda k: iam.delete_access_key(UserName=name, AccessKeyId=k),
                       detail=f"{key['AccessKeyId']}: {why}")
    if kept is not None:
        key_id = ctx.found("access-key", KEY_KIND, kept["AccessKeyId"], live=kept.get("Status", "?"))
        if kept.get("Status") != "Active":
            ctx.update("access-key", KEY_KIND, f"status {kept.get('Status')} → Active",
                       lambda: iam.update_access_key(UserName=name, AccessKeyId=key_id, Status="Active"))
    else:
        def create_key(token: str) -> str:
            key = iam.create_access_key(UserName=name)["AccessKey"]
            key_id = str(key["AccessKeyId"])
            value = json.dumps({"access_key_id": key_id, "secret_access_key": key["SecretAccessKey"]})
            del key
            # If this fails, the key stays: whether the value landed (a lost response) only the
            # secret can tell, and the next run reads it — keeping the key or deleting it.
            sm.put_secret_value(SecretId=secret_arn, SecretString=value,
                                ClientRequestToken=_version_token(key_id))
            return key_id

        reason = "" if stored is None else f"; the stored key {stored} is gone (rotation)"
        key_id = ctx.create("access-key", KEY_KIND, create_key, detail=f"stored in secret {sname}{reason}")
    ctx.forget(STALE_KEY)
    return {"iam_user_name": name, "iam_user_arn": arn, "access_key_id": key_id,
            "secret_access_key_secret_arn": secret_arn}


def _delete_user(ctx: StepContext, name: str, user: dict[str, Any], detail: str) -> None:
    iam = ctx.aws.client("iam")
    keys = ctx.call(lambda: paginate(iam, "list_access_keys", "AccessKeyMetadata", UserName=name))
    for key in keys:
        ctx.delete("access-key", KEY_KIND, key["AccessKeyId"],
                   lambda k: iam.delete_access_key(UserName=name, AccessKeyId=k))
    ctx.delete("user", USER_KIND, user["Arn"], lambda arn: delete_user(ctx, name), detail=detail)


def delete_user(ctx: StepContext, name: str) -> None:
    """A user can only go once nothing hangs off it: keys, policies, groups, login profile."""
    iam = ctx.aws.client("iam")
    for key in paginate(iam, "list_access_keys", "AccessKeyMetadata", UserName=name):
        ignore_not_found(lambda k=key: iam.delete_access_key(UserName=name, AccessKeyId=k["AccessKeyId"]))
    for policy in paginate(iam, "list_attached_user_policies", "AttachedPolicies", UserName=name):
        ignore_not_found(lambda p=policy: iam.detach_user_policy(UserName=name, PolicyArn=p["PolicyArn"]))
    for policy_name in paginate(iam, "list_user_policies", "PolicyNames", UserName=name):
        ignore_not_found(lambda p=policy_name: iam.delete_user_policy(UserName=name, PolicyName=p))
    for group in paginate(iam, "list_groups_for_user", "Groups", UserName=name):
        ignore_not_found(lambda g=group: iam.remove_user_from_group(GroupName=g["GroupName"],
                                                                     UserName=name))
    ignore_not_found(lambda: iam.delete_login_profile(UserName=name))
    iam.delete_user(UserName=name)



def destroy_backend_user(ctx: StepContext) -> None:
    sm = ctx.aws.client("secretsmanager")
    # The recorded name too: the user of a since-changed exadeploy_id must not be left behind.
    recorded_name: str | None = (ctx.recorded("user") or {}).get("name")
    for name in sorted({user_name(ctx), recorded_name or user_name(ctx)}):
        user = find_user(ctx, name)
        if user is None:
            continue
        if not user_is_ours(ctx, user):
            ctx.report(f"leaving IAM user {name}: it does not belong to this deployment")
            continue
        _delete_user(ctx, name, user, detail=name)

    secret = find_secret(ctx)
    if secret is not None and not secret.get("DeletedDate"):
        if not secret_is_ours(ctx, secret):
            ctx.report(f"leaving secret {secret_name(ctx)}: it does not belong to this deployment")
        else:
            args: dict[str, Any]
            if ctx.aws.endpoint_url:  # a local emulator: nothing to recover, and the name is free
                how, args = "deleted at once (local endpoint)", {"ForceDeleteWithoutRecovery": True}
            else:
                how = f"recoverable for {RECOVERY_WINDOW_DAYS} days"
                args = {"RecoveryWindowInDays": RECOVERY_WINDOW_DAYS}
            ctx.delete("secret", SECRET_KIND, secret["ARN"],
                       lambda arn: sm.delete_secret(SecretId=arn, **args),
                       detail=f"{secret_name(ctx)} ({how})")
            if not ctx.planning:
                ctx.report(f"secret {secret_name(ctx)}: {how}")
    for logical in ctx.recorded_logicals():  # recorded, but already gone from AWS
        ctx.forget(logical)


# -- step: bucket -------------------------------------------------------------------------

def bucket_prefix(ctx: StepContext) -> str:
    return f"module-repo-{ctx.cfg.backend_id}-"


def new_bucket_name(ctx: StepContext) -> str:
    return bucket_prefix(ctx) + "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))


def bucket_arn(ctx: StepContext, name: str) -> str:
    return f"arn:{partition(ctx.cfg.region)}:s3:::{name}"


def bucket_policy(ctx: StepContext, name: str, user_arn: str) -> dict[str, Any]:
    arn = bucket_arn(ctx, name)
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "BackendUserObjects", "Effect": "Allow", "Principal": {"AWS": user_arn},
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": f"{arn}/*"},
        {"Sid": "BackendUserList", "Effect": "Allow", "Principal": {"AWS": user_arn},
         "Action": "s3:ListBucket", "Resource": arn},
        # The only `*` principal exaprov writes, and it can only refuse.
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]}


def head_bucket(ctx: StepContext, name: str) -> dict[str, Any] | None:
    s3 = ctx.aws.client("s3")
    return _or_none(ctx, lambda: s3.head_bucket(Bucket=name), NO_BUCKET_CODES)


def bucket_region(ctx: StepContext, head: dict[str, Any]) -> str:
    region = head.get("BucketRegion") or head.get("ResponseMetadata", {}).get(
        "HTTPHeaders", {}).get("x-amz-bucket-region")
    return str(region or ctx.cfg.region)


def bucket_tags(ctx: StepContext, name: str) -> dict[str, str]:
    s3 = ctx.aws.client("s3")
    found = _or_none(ctx, lambda: s3.get_bucket_tagging(Bucket=name), frozenset({"NoSuchTagSet"}))
    return tag_dict((found or {}).get("TagSet"))


def tagged_buckets(ctx: StepContext) -> list[str]:
    """This deployment's buckets (by prefix, then tags), oldest first."""
    s3 = ctx.aws.client("s3")
    prefix = bucket_prefix(ctx)
    listed = ctx.call(lambda: paginate(s3, "list_buckets", "Buckets", Prefix=prefix))
    ours = []
    for bucket in sorted(listed, key=lambda b: b["CreationDate"]):
        if not bucket["Name"].startswith(prefix):
            continue
        try:
            tags = bucket_tags(ctx, bucket["Name"])
        except AwsError as exc:
            if exc.code in ("AccessDenied", "NoSuchBucket"):
                continue
            raise
        if is_ours(ctx.cfg.name, tags) and tags.get(TAG_COMPONENT) == ctx.step \
                and tags.get(TAG_RESOURCE) == "bucket":
            ours.append(bucket["Name"])
    return ours


def recorded_bucket(ctx: StepContext) -> tuple[str, str, dict[str, str]] | None:
    """(name, region, tags) of the bucket the state records as created, or None.

    Its tags are read anyway, and GetBucketTagging answers NoSuchBucket for a bucket gone:
    one call instead of HeadBucket + GetBucketTagging (a bucket's region never changes).
    """
    rec = ctx.recorded("bucket") or {}
    name, region = rec.get("id"), rec.get("region")
    if not name or not region or rec.get("status") != CREATED:
        return None
    s3 = ctx.aws.client("s3")
    try:
        found = ctx.call(lambda: s3.get_bucket_tagging(Bucket=name))
    except AwsError as exc:
        code = error_code(exc.__cause__) if exc.__cause__ is not None else None
        if code == "NoSuchTagSet":
            return name, region, {}
        if exc.__cause__ is not None and (is_not_found(exc.__cause__) or code in NO_BUCKET_CODES):
            return None
        raise
    return name, region, tag_dict(found.get("TagSet"))


def find_bucket(ctx: StepContext) -> tuple[str, dict[str, Any]] | None:
    """(name, HeadBucket response): the recorded name (an intent's too), else by tags."""
    rec = ctx.recorded("bucket") or {}
    for name in dict.fromkeys(n for n in (rec.get("id"), rec.get("name")) if n):
        head = head_bucket(ctx, name)
        if head is not None:
            return name, head
    found = tagged_buckets(ctx)
    if len(found) > 1:
        ctx.report(f"several buckets carry this deployment's tags: {', '.join(found)}; "
                   f"using the oldest, {found[0]}")
    for name in found:
        head = head_bucket(ctx, name)
        if head is not None:
            return name, head
    return None


def create_bucket_args(ctx: StepContext, name: str, tags: dict[str, str]) -> dict[str, Any]:
    """us-east-1 takes no LocationConstraint (S3 refuses one naming it)."""
    config: dict[str, Any] = {"Tags": tag_list(tags)}
    if ctx.cfg.region != "us-east-1":
        config["LocationConstraint"] = ctx.cfg.region
    return {"Bucket": name, "CreateBucketConfiguration": config, "ObjectOwnership": OWNERSHIP}


def ensure_bucket(ctx: StepContext) -> dict[str, Any]:
    s3 = ctx.aws.client("s3")
    user_arn = ctx.upstream["backend-user"]["iam_user_arn"]
    prefix = bucket_prefix(ctx)
    known = recorded_bucket(ctx)
    found = (known[0], {"BucketRegion": known[1]}) if known else find_bucket(ctx)
    if found is not None and not found[0].startswith(prefix):
        raise InputError(
            f"bucket: the bucket {found[0]} was made for another module_repo_backend.exadeploy_id; "
            "an S3 bucket cannot be renamed",
            hint="put exadeploy_id back, or run `exaprov destroy` first (the bucket's data is lost)")
    if found is None:
        return _create_bucket(ctx, user_arn)

    name, head = found
    live_tags = known[2] if known else bucket_tags(ctx, name)
    # The name's random suffix is exaprov's choice, so a recorded name is as good as an ID:
    # an untagged one is ours (a crash between CreateBucket and its tagging), another
    # deployment's never.
    if not is_ours(ctx.cfg.name, live_tags, recorded_id=True):
        raise clash("S3 bucket", name, live_tags, "module_repo_backend.exadeploy_id", ctx.cfg.name)
    region = bucket_region(ctx, head)
    ctx.found("bucket", BUCKET_KIND, name, name=name, region=region)
    tags = ctx.tags("bucket", name=name)
    missing = {k: v for k, v in tags.items() if live_tags.get(k) != v}
    if missing:
        keep = {k: v for k, v in live_tags.items() if not k.startswith("aws:")}
        ctx.update("bucket", BUCKET_KIND, _tag_text(missing), lambda: s3.put_bucket_tagging(
            Bucket=name, Tagging={"TagSet": tag_list({**keep, **tags})}))

    blocks = _or_none(ctx, lambda: s3.get_public_access_block(Bucket=name),
                      frozenset({"NoSuchPublicAccessBlockConfiguration"}))
    live_blocks = (blocks or {}).get("PublicAccessBlockConfiguration", {})
    off = [b for b in PUBLIC_ACCESS_BLOCKS if not live_blocks.get(b)]
    if off:
        ctx.update("bucket", BUCKET_KIND, "public access blocks on: " + ", ".join(off),
                   lambda: _put_public_access_block(ctx, name))

    controls = _or_none(ctx, lambda: s3.get_bucket_ownership_controls(Bucket=name),
                        frozenset({"OwnershipControlsNotFoundError"}))
    rules = (controls or {}).get("OwnershipControls", {}).get("Rules", [])
    ownership = rules[0].get("ObjectOwnership") if rules else None
    if ownership != OWNERSHIP:
        ctx.update("bucket", BUCKET_KIND, f"object ownership {ownership} → {OWNERSHIP}",
                   lambda: s3.put_bucket_ownership_controls(
                       Bucket=name, OwnershipControls={"Rules": [{"ObjectOwnership": OWNERSHIP}]}))

    encryption = _or_none(ctx, lambda: s3.get_bucket_encryption(Bucket=name),
                          frozenset({"ServerSideEncryptionConfigurationNotFoundError"}))
    enc_rules = (encryption or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    algorithms = [r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in enc_rules]
    # BucketKeyEnabled is set but not compared: it only matters for SSE-KMS, and S3 need
    # not echo it for SSE-S3 (comparing it could report drift forever).
    if algorithms != [SSE_ALGORITHM]:
        ctx.update("bucket", BUCKET_KIND, f"default encryption {algorithms or 'none'} → SSE-S3",
                   lambda: _put_encryption(ctx, name))

    policy = bucket_policy(ctx, name, user_arn)
    live_policy = _or_none(ctx, lambda: s3.get_bucket_policy(Bucket=name), frozenset({"NoSuchBucketPolicy"}))
    if live_policy is None or normalise_policy(live_policy["Policy"]) != normalise_policy(policy):
        ctx.update("bucket", BUCKET_KIND, "bucket policy" if live_policy else "bucket policy (missing)",
                   lambda: _put_policy(ctx, name, policy))
    return {"s3_bucket_id": name, "s3_bucket_arn": bucket_arn(ctx, name), "s3_bucket_region": region}


def _create_bucket(ctx: StepContext, user_arn: str) -> dict[str, Any]:
    s3, prefix = ctx.aws.client("s3"), bucket_prefix(ctx)
    rec = ctx.recorded("bucket") or {}
    # The name chosen before (an intent a crash left, or a bucket deleted out of band) is kept.
    name = next((n for n in (rec.get("name"), rec.get("id")) if n and n.startswith(prefix)), None)
    detail = name or f"{prefix}<{SUFFIX_LENGTH} random characters>"
    name = name or new_bucket_name(ctx)
    tags = ctx.tags("bucket", name=name)

    def create(token: str) -> str:
        try:
            s3.create_bucket(**create_bucket_args(ctx, name, tags))
        except ClientError as exc:
            if error_code(exc) != "BucketAlreadyOwnedByYou":  # a retried create: ours already
                raise
        return name

    try:
        ctx.create("bucket", BUCKET_KIND, create, detail=f"{detail} in {ctx.cfg.region}", name=name,
                   region=ctx.cfg.region)
    except AwsError as exc:
        if exc.code == "BucketAlreadyExists":  # the name is someone else's now
            ctx.forget("bucket")
            exc.hint = "run `exaprov up` again: it draws another bucket name"
        raise
    policy = bucket_policy(ctx, name, user_arn)
    ctx.update("bucket", BUCKET_KIND, "tags", initial=True, apply=lambda: s3.put_bucket_tagging(
        Bucket=name, Tagging={"TagSet": tag_list(tags)}))  # for endpoints ignoring create's tags
    ctx.update("bucket", BUCKET_KIND, "public access blocks", initial=True,
               apply=lambda: _put_public_access_block(ctx, name))
    ctx.update("bucket", BUCKET_KIND, "default encryption", initial=True,
               apply=lambda: _put_encryption(ctx, name))
    ctx.update("bucket", BUCKET_KIND, "bucket policy", initial=True,
               apply=lambda: _put_policy(ctx, name, policy))
    if ctx.planning:
        new = unknown(ctx.address("bucket"))
        return {"s3_bucket_id": new, "s3_bucket_arn": new, "s3_bucket_region": ctx.cfg.region}
    return {"s3_bucket_id": name, "s3_bucket_arn": bucket_arn(ctx, name), "s3_bucket_region": ctx.cfg.region}


def _put_public_access_block(ctx: StepContext, name: str) -> None:
    ctx.aws.client("s3").put_public_access_block(
        Bucket=name, PublicAccessBlockConfiguration={b: True for b in PUBLIC_ACCESS_BLOCKS})


def _put_encryption(ctx: StepContext, name: str) -> None:
    ctx.aws.client("s3").put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": SSE_ALGORITHM},
                   "BucketKeyEnabled": True}]})


def _put_policy(ctx: StepContext, name: str, policy: dict[str, Any]) -> None:
    # A user created moments ago may not be a valid principal yet (IAM propagation).
    s3 = ctx.aws.client("s3")
    ctx.retry_while("bucket policy", lambda: s3.put_bucket_policy(Bucket=name, Policy=json.dumps(policy)),
                    {"MalformedPolicy"}, timeout=120, message="principal",
                    hint="the backend IAM user is not yet known to S3")


def destroy_bucket(ctx: StepContext) -> None:
    rec = ctx.recorded("bucket") or {}
    names = [n for n in dict.fromkeys(x for x in (rec.get("id"), rec.get("name")) if x)
             if head_bucket(ctx, n) is not None]
    names += [n for n in tagged_buckets(ctx) if n not in names]
    for name in names:
        if not is_ours(ctx.cfg.name, bucket_tags(ctx, name), recorded_id=True):
            ctx.report(f"leaving bucket {name}: it carries another deployment's tag")
            continue
        objects, versions, more = _count_versions(ctx, name)
        if versions:
            plus = "+" if more else ""
            detail = f"DATA LOSS: bucket {name} and its {objects}{plus} objects"
            if versions != objects:
                detail += f" ({versions}{plus} versions)"
        else:
            detail = f"{name} (empty)"
        ctx.delete("bucket", BUCKET_KIND, name, lambda b: _empty_and_delete(ctx, b), detail=detail)
    for logical in ctx.recorded_logicals():  # recorded, but already gone from AWS
        ctx.forget(logical)


def _count_versions(ctx: StepContext, name: str) -> tuple[int, int, bool]:
    """(objects, object versions, more than counted) for the delete's DATA LOSS line; a
    huge bucket is counted up to COUNT_LIMIT versions only (ListObjectVersions, paginated)."""
    s3 = ctx.aws.client("s3")
    pages = ctx.call(lambda: list(s3.get_paginator("list_object_versions").paginate(
        Bucket=name, PaginationConfig={"MaxItems": COUNT_LIMIT})))
    versions = [v for page in pages for v in page.get("Versions", [])]
    more = any(page.get("IsTruncated") for page in pages[-1:])
    return len({v["Key"] for v in versions}), len(versions), more


def _empty_and_delete(ctx: StepContext, name: str) -> None:
    """Delete every object version and delete marker, a page of up to 1000 at a time (the
    first page again until none is left), then the bucket.

    Objects written meanwhile (the backend may still run) make DeleteBucket say
    BucketNotEmpty: empty again, a few times. Deletes the bucket policy refuses (a Deny
    added by hand; emulators that read the TLS Deny as matching every request) make
    exaprov remove the policy of the doomed bucket once and try again.
    """
    s3 = ctx.aws.client("s3")
    policy_removed = False
    for attempt in range(5):
        while True:
            page = s3.list_object_versions(Bucket=name, MaxKeys=DELETE_BATCH)
            batch = [{"Key": o["Key"], "VersionId": o["VersionId"]}
                     for o in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            if not batch:
                break
            ctx.report(f"emptying bucket {name}: deleting {len(batch)} object versions")
            errors = s3.delete_objects(Bucket=name, Delete={"Objects": batch, "Quiet": True}).get(
                "Errors", [])
            if errors and not policy_removed and all(e.get("Code") == "AccessDenied" for e in errors):
                ctx.report(f"bucket {name}: its policy denies deleting objects; removing the policy")
                s3.delete_bucket_policy(Bucket=name)
                policy_removed = True
            elif errors:
                first = errors[0]
                raise AwsError(ctx.step, "DeleteObjects", first.get("Code", "Error"),
                               f"{len(errors)} object(s) not deleted, e.g. {first.get('Key')}: "
                               f"{first.get('Message', '')}")
        try:
            s3.delete_bucket(Bucket=name)
            return
        except ClientError as exc:
            if error_code(exc) != "BucketNotEmpty" or attempt == 4:
                raise


def _enabled(cfg: Any) -> bool:
    return cfg.module_repo_backend is not None


BACKEND_USER = Step("backend-user", (), ensure_backend_user, destroy_backend_user, enabled=_enabled,
                    title="module repository IAM user and access key")
BUCKET = Step("bucket", ("backend-user",), ensure_bucket, destroy_bucket, enabled=_enabled,
              title="module repository S3 bucket")
