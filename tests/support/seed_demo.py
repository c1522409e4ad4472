#!/usr/bin/env python3
"""Seeds a moto server with the demo's IAM users. Usage: seed_demo.py ENDPOINT [change]

Without `change`: engineering users (keys, MFA, console, tags, groups) plus users outside the
demo's path prefix. With `change`: what a security team wants to see in the diff log — a new
access key, lost MFA, a new contractor, a removed user.
"""
import sys

import boto3

endpoint = sys.argv[1]
iam = boto3.client(
    "iam",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)


def user(name, path, tags=(), keys=0, inactive_keys=0, mfa=False, console=False, groups=()):
    iam.create_user(UserName=name, Path=path, Tags=[{"Key": k, "Value": v} for k, v in tags])
    for _ in range(keys + inactive_keys):
        iam.create_access_key(UserName=name)
    if inactive_keys:
        for key in iam.list_access_keys(UserName=name)["AccessKeyMetadata"][-inactive_keys:]:
            iam.update_access_key(UserName=name, AccessKeyId=key["AccessKeyId"], Status="Inactive")
    if mfa:
        serial = iam.create_virtual_mfa_device(VirtualMFADeviceName=name)["VirtualMFADevice"]["SerialNumber"]
        iam.enable_mfa_device(UserName=name, SerialNumber=serial, AuthenticationCode1="123456", AuthenticationCode2="654321")
    if console:
        iam.create_login_profile(UserName=name, Password="Demo-password-1!")
    for g in groups:
        iam.add_user_to_group(GroupName=g, UserName=name)


if len(sys.argv) > 2 and sys.argv[2] == "change":
    alice_keys = iam.list_access_keys(UserName="alice")["AccessKeyMetadata"]
    iam.create_access_key(UserName="alice")
    bob_mfa = iam.list_mfa_devices(UserName="bob")["MFADevices"][0]["SerialNumber"]
    iam.deactivate_mfa_device(UserName="bob", SerialNumber=bob_mfa)
    user("dave", "/engineering/contractors/", tags=[("company", "Acme Consulting")], keys=1)
    iam.delete_login_profile(UserName="carol")
    iam.remove_user_from_group(GroupName="developers", UserName="carol")
    iam.delete_user(UserName="carol")
    sys.exit(0)

for g in ("admins", "developers"):
    iam.create_group(GroupName=g)
user("alice", "/engineering/", tags=[("team", "platform"), ("cost-centre", "R&D ✓")], keys=1, mfa=True, console=True, groups=["admins"])
user("bob", "/engineering/", tags=[("team", "données")], keys=1, inactive_keys=1, mfa=True, console=True, groups=["developers"])
user("carol", "/engineering/", console=True, groups=["developers"])
user("ci-deploy", "/engineering/automation/", tags=[("owner", "platform")], keys=1)
user("erin", "/finance/", console=True)
user("frank", "/contractors/", keys=1)
