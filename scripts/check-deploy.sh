#!/usr/bin/env bash
# Checks the packaging and deployment files (Dockerfile, deploy/) against the code, without Docker, AWS or
# a Kubernetes cluster:
#   - the IAM policies grant exactly the AWS calls the code makes (every "iam:X" / "sts:X" / "cloudtrail:X" /
#     "sqs:X" label in src/), read-only but for two named writes; SQS only on the events queue, in the
#     caller's policy only; cloudtrail:LookupEvents in the caller's policy and the reader role alike,
#   - the IAM events queue template (deploy/iam-events-queue.yaml) matches the code: the events the daemon
#     handles, the queue name the policy names, us-east-1, encryption, retention, dead-letter queue,
#   - every JSON / YAML file parses; the CloudFormation templates pass cfn-lint,
#   - the Kubernetes manifests have the expected kinds and wiring, probes on /healthz,
#   - the systemd units pass `systemd-analyze verify`,
#   - the Dockerfile builds with `cargo build --release --locked`, runs as non-root, checks /healthz,
#   - the sharded CronJob (deploy/kubernetes/sharded-cronjob.yaml) is an Indexed Job whose N (completions,
#     parallelism, `--shard $(JOB_COMPLETION_INDEX)/N`, the store file name) agrees, gives each pod its own
#     store (Kubernetes' $(VAR) expansion emulated, env order included), on the image, ServiceAccount and
#     config of cronjob.yaml, and never retries exit 1 or 2,
#   - the shipped configs pass `iam-inventory check-config`, and the sharded pods' flags are in `--help` and
#     resolve to shard I of N (when a built binary is there).
# One line per check, then "N passed, M failed" (", K skipped" when some could not run here).
# Exit 1 when any check failed. Run from anywhere; needs ./.venv (scripts/bootstrap.sh) for PyYAML.
set -euo pipefail
cd "$(dirname "$0")/.."

# Actions the policies may grant although no "iam:X" label for them is in src/, one per line as
# "action|reason" (e.g. "iam:GetCredentialReport|the bulk strategy, landing in the next change").
# Empty: today the policies grant exactly what the code calls.
ALLOWED_EXTRA=()
# sts:GetCallerIdentity needs no permission (AWS answers it even under an explicit Deny), so no policy lists it.
NO_PERMISSION_NEEDED="sts:GetCallerIdentity"
# The only actions that are not reads (Get/List/Lookup/Receive) the policies may grant, "action|reason".
# Any other write (to IAM above all) fails, whatever src/ calls.
ALLOWED_WRITES=(
  "iam:GenerateCredentialReport|rebuilds the account's credential report for the bulk strategy, changes no user"
  "sqs:DeleteMessage|deletes handled messages (DeleteMessageBatch) from iam-inventory's own events queue, not IAM"
)
# Event names deploy/iam-events-queue.yaml's rule may send although src/collect/events/mod.rs does not act on
# them, "EventName|reason". The rule must send every event the code acts on.
RULE_EXTRA_EVENTS=(
  "DeleteGroup|in the contract's list; the daemon counts it as ignored (IAM refuses to delete a group with members)"
)

passed=0
failed=0
skipped=0
tally() { # reads "ok: ..." / "FAIL: ..." / "skipped: ..." lines, echoes and counts them
  local line
  while IFS= read -r line; do
    echo "$line"
    case "$line" in
      ok:*) passed=$((passed + 1)) ;;
      FAIL:*) failed=$((failed + 1)) ;;
      skipped:*) skipped=$((skipped + 1)) ;;
    esac
  done
}
ok() { tally <<<"ok: $*"; }
fail() { tally <<<"FAIL: $*"; }
skip() { tally <<<"skipped: $*"; }

py=./.venv/bin/python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- the AWS calls the code makes ---------------------------------------------------------------------------
code_actions=$(grep -rhoE '"(iam|sts|organizations|cloudtrail|sqs):[A-Za-z]+"' src/ | tr -d '"' | sort -u || true)
if [ -n "$code_actions" ]; then
  ok "code makes $(wc -l <<<"$code_actions") distinct AWS calls: $(tr '\n' ' ' <<<"$code_actions")"
else
  fail 'no "iam:X" / "sts:X" operation labels found in src/ (did CollectError::from_sdk labels change?)'
fi

# --- structured checks: policies, JSON, YAML, CloudFormation, Kubernetes, Dockerfile -------------------------
if [ -x "$py" ] && "$py" -c 'import yaml' 2>/dev/null; then
  WORK="$work" CODE_ACTIONS="$code_actions" NO_PERMISSION_NEEDED="$NO_PERMISSION_NEEDED" \
    ALLOWED_EXTRA="$(printf '%s\n' "${ALLOWED_EXTRA[@]+"${ALLOWED_EXTRA[@]}"}")" \
    ALLOWED_WRITES="$(printf '%s\n' "${ALLOWED_WRITES[@]+"${ALLOWED_WRITES[@]}"}")" \
    RULE_EXTRA_EVENTS="$(printf '%s\n' "${RULE_EXTRA_EVENTS[@]+"${RULE_EXTRA_EVENTS[@]}"}")" \
    "$py" - >"$work/py.out" 2>&1 <<'PY' || echo "FAIL: the structured checks crashed (see the lines above)" >>"$work/py.out"
import glob, json, os, posixpath, re, sys
import yaml

def ok(msg): print(f"ok: {msg}")
def fail(msg): print(f"FAIL: {msg}")

code = set(os.environ["CODE_ACTIONS"].split())
exempt = set(os.environ["NO_PERMISSION_NEEDED"].split())
def reasons(var):
    out = {}
    for line in os.environ[var].splitlines():
        if "|" in line:
            key, reason = line.split("|", 1)
            out[key] = reason
    return out
extra = reasons("ALLOWED_EXTRA")
allowed_writes = reasons("ALLOWED_WRITES")
rule_extra_events = reasons("RULE_EXTRA_EVENTS")
code_iam = {a for a in code if a.startswith("iam:")}
# [events_source] type = "cloudtrail" polls LookupEvents with each collected account's credentials: the
# caller's own (iam-policy.json) and the assumed reader roles (cross-account-role.yaml) alike.
code_trail = {a for a in code if a.startswith("cloudtrail:")}
# type = "sqs" reads the queue with the caller's credentials only (the queue is in the caller's account).
code_sqs = {a for a in code if a.startswith("sqs:")}
# The consumer actions, and nothing else, on the events queue only.
SQS_CONSUME = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
# The queue's region: IAM's events reach EventBridge only in us-east-1.
EVENTS_REGION = "us-east-1"
# The base identity's own calls: AssumeRole into the readers, and ListAccounts for [aws.organization].
code_sts = {a for a in code if a.startswith(("sts:", "organizations:"))} - exempt

class TolerantLoader(yaml.SafeLoader):
    """SafeLoader that keeps CloudFormation's !Ref / !Sub / !GetAtt... as {"!Tag": value}."""
def _any_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"!" + suffix: value}
TolerantLoader.add_multi_constructor("!", _any_tag)

# Every SQS / CloudTrail SDK call in src/ carries the label of the IAM action that authorizes it, so the
# policies are checked against it. The batch calls have no IAM action of their own: "You cannot set
# permissions explicitly for SendMessageBatch, DeleteMessageBatch, or ChangeMessageVisibilityBatch. Instead,
# setting permissions for SendMessage, DeleteMessage, or ChangeMessageVisibility sets permissions for the
# corresponding batch versions" (Amazon SQS Developer Guide, "Amazon SQS batch actions",
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-batch-api.html).
SDK_OPS = {
    "sqs": ["add_permission", "cancel_message_move_task", "change_message_visibility",
            "change_message_visibility_batch", "create_queue", "delete_message", "delete_message_batch",
            "delete_queue", "get_queue_attributes", "get_queue_url", "list_dead_letter_source_queues",
            "list_message_move_tasks", "list_queue_tags", "list_queues", "purge_queue", "receive_message",
            "remove_permission", "send_message", "send_message_batch", "set_queue_attributes",
            "start_message_move_task", "tag_queue", "untag_queue"],
    "cloudtrail": ["lookup_events", "describe_trails", "get_trail_status", "get_event_selectors",
                   "list_trails", "get_trail"],
}
def iam_action(service, op):
    if service == "sqs" and op.endswith("_batch"):
        op = op[: -len("_batch")]
    return f"{service}:" + "".join(p.capitalize() for p in op.split("_"))
sdk_calls = {}
for path in sorted(glob.glob("src/**/*.rs", recursive=True)):
    text = open(path).read()
    for service, ops in SDK_OPS.items():
        for op in ops:
            if re.search(r"\.\s*" + op + r"\s*\(\s*\)", text):
                sdk_calls.setdefault(iam_action(service, op), set()).add(f"{op} ({path})")
unlabelled = {a: c for a, c in sdk_calls.items() if a not in code}
if unlabelled:
    fail("SDK calls in src/ without their IAM action as an operation label (so unchecked against the "
         "policies): " + "; ".join(f"{', '.join(sorted(c))} needs \"{a}\"" for a, c in sorted(unlabelled.items())))
elif sdk_calls:
    ok("every SQS/CloudTrail SDK call in src/ is labelled with its IAM action: " +
       "; ".join(f"{', '.join(sorted(c.split(' ')[0] for c in cs))} -> {a}" for a, cs in sorted(sdk_calls.items())))

# Every JSON and YAML file under deploy/ parses.
docs = {}
for path in sorted(glob.glob("deploy/**/*.json", recursive=True)):
    try:
        with open(path) as f:
            docs[path] = json.load(f)
        ok(f"{path} is valid JSON")
    except Exception as e:
        fail(f"{path} is not valid JSON: {e}")
for path in sorted(glob.glob("deploy/**/*.y*ml", recursive=True)):
    try:
        with open(path) as f:
            docs[path] = [d for d in yaml.load_all(f, Loader=TolerantLoader) if d is not None]
        ok(f"{path} is valid YAML ({len(docs[path])} document(s))")
    except Exception as e:
        fail(f"{path} is not valid YAML: {' '.join(str(e).split())}")

def allowed_actions(policy, where):
    """The actions a policy document allows, or None (after a FAIL line) when it cannot be read."""
    if not isinstance(policy, dict) or "Statement" not in policy:
        fail(f"{where}: no policy document with a Statement")
        return None
    statements = policy["Statement"]
    if isinstance(statements, dict):
        statements = [statements]
    actions = set()
    for st in statements:
        if "NotAction" in st or "NotResource" in st:
            fail(f"{where}: NotAction/NotResource grants more than the code needs")
            return None
        if st.get("Effect") != "Allow":
            continue
        a = st.get("Action", [])
        actions.update([a] if isinstance(a, str) else a)
    return actions

def check_policy(actions, where, needed, may_have):
    if actions is None:
        return
    missing = sorted(needed - actions)
    if missing:
        fail(f"{where} lacks {', '.join(missing)}, which the code calls: add it (and to its twin policy)")
    else:
        ok(f"{where} grants every {'/'.join(sorted({a.split(':')[0] for a in needed}))} call the code makes ({len(needed)})")
    surplus = sorted(actions - needed - may_have)
    if surplus:
        fail(f"{where} grants {', '.join(surplus)}, which the code never calls (least privilege): remove it, "
             f"or list it in ALLOWED_EXTRA of scripts/check-deploy.sh with the reason")
    else:
        listed = sorted((actions & may_have) - needed)
        note = f"; allowed extra: {', '.join(listed)}" if listed else ""
        ok(f"{where} grants nothing the code does not call (least privilege{note})")

def allow_statements(policy):
    """(Sid, actions, resources, statement) of every Allow statement of a readable policy document."""
    sts = (policy or {}).get("Statement", [])
    if isinstance(sts, dict):
        sts = [sts]
    out = []
    for st in sts:
        if st.get("Effect") != "Allow":
            continue
        a, r = st.get("Action", []), st.get("Resource", [])
        out.append((st.get("Sid"), set([a] if isinstance(a, str) else a), [r] if not isinstance(r, list) else r, st))
    return out

READ_VERBS = ("Get", "List", "Lookup", "Describe", "Receive")
def check_read_only(actions, where):
    """Reads only, but for the ALLOWED_WRITES of scripts/check-deploy.sh (each with its reason)."""
    if actions is None:
        return
    writes = sorted(a for a in actions if not a.split(":", 1)[-1].startswith(READ_VERBS))
    unexplained = [a for a in writes if a not in allowed_writes]
    if unexplained:
        fail(f"{where} grants {', '.join(unexplained)}, which is not a read: iam-inventory only reads "
             "(a deliberate exception goes in ALLOWED_WRITES of scripts/check-deploy.sh, with the reason)")
    else:
        ok(f"{where} is read-only but for " + ("; ".join(f"{a} ({allowed_writes[a]})" for a in writes) or "nothing"))

def queue_default_name(tmpl):
    return str(((tmpl.get("Parameters") or {}).get("QueueName") or {}).get("Default", ""))

events_tmpl = (docs.get("deploy/iam-events-queue.yaml") or [{}])[0]
queue_name = queue_default_name(events_tmpl)

reader = docs.get("deploy/iam-policy.json")
reader_actions = allowed_actions(reader, "deploy/iam-policy.json") if reader is not None else None
if reader is None:
    fail("deploy/iam-policy.json is missing")
check_policy(reader_actions, "deploy/iam-policy.json", code_iam | code_trail | code_sqs, set(extra))
check_read_only(reader_actions, "deploy/iam-policy.json")

# The SQS source's statement: the consumer actions only, on the events queue only.
if reader_actions is not None:
    sqs_sts = [s for s in allow_statements(reader) if any(a.lower().startswith("sqs:") for a in s[1])]
    problems = []
    if code_sqs - SQS_CONSUME:
        problems.append(f"the code calls {sorted(code_sqs - SQS_CONSUME)}: beyond consuming the queue, review "
                        "SQS_CONSUME in scripts/check-deploy.sh first")
    if len(sqs_sts) != 1:
        problems.append(f"expected one statement granting sqs: actions, found {len(sqs_sts)}")
    else:
        sid, actions, resources, st = sqs_sts[0]
        if sid != "ConsumeIamEventsQueue":
            problems.append(f"the SQS statement's Sid should be ConsumeIamEventsQueue, is {sid!r}")
        if actions != SQS_CONSUME:
            problems.append(f"the SQS statement must grant exactly {sorted(SQS_CONSUME)}, grants {sorted(actions)}")
        # arn:<partition>:sqs:us-east-1:<account>:<the template's QueueName>; "*" only for partition/account.
        want = re.compile(r"arn:(\*|aws[a-z-]*):sqs:" + re.escape(EVENTS_REGION) + r":(\*|\d{12}):"
                          + re.escape(queue_name) + r"$")
        bad = [r for r in resources if not (isinstance(r, str) and want.match(r))]
        if not queue_name:
            problems.append("deploy/iam-events-queue.yaml has no QueueName parameter default to compare with")
        elif bad or not resources:
            problems.append(f"the SQS statement's Resource must be the events queue only "
                            f"(arn:*:sqs:{EVENTS_REGION}:*:{queue_name}), is {bad or resources}")
        if "Condition" in st:
            problems.append("the SQS statement has a Condition this check does not understand")
    if problems:
        fail("deploy/iam-policy.json ConsumeIamEventsQueue: " + "; ".join(problems))
    else:
        ok(f"deploy/iam-policy.json ConsumeIamEventsQueue: only {', '.join(sorted(SQS_CONSUME))}, only on "
           f"{sqs_sts[0][2][0]} (deploy/iam-events-queue.yaml's queue; not its dead-letter queue)")

assume = docs.get("deploy/assume-role-policy.json")
if assume is None:
    fail("deploy/assume-role-policy.json is missing")
else:
    check_policy(allowed_actions(assume, "deploy/assume-role-policy.json"), "deploy/assume-role-policy.json",
                 code_sts, set())

# The CloudFormation reader role.
cfn_docs = docs.get("deploy/cross-account-role.yaml") or [{}]
cfn = cfn_docs[0]
roles = [r for r in (cfn.get("Resources") or {}).values() if r.get("Type") == "AWS::IAM::Role"]
if len(roles) != 1:
    fail(f"deploy/cross-account-role.yaml: expected one AWS::IAM::Role, found {len(roles)}")
else:
    props = roles[0].get("Properties", {})
    cfn_actions = set()
    for p in props.get("Policies", []):
        got = allowed_actions(p.get("PolicyDocument"), "deploy/cross-account-role.yaml inline policy")
        if got is None:
            cfn_actions = None
            break
        cfn_actions |= got
    # No SQS here: the queue is read with the base identity, never through a reader role.
    check_policy(cfn_actions, "deploy/cross-account-role.yaml inline policy", code_iam | code_trail, set(extra))
    check_read_only(cfn_actions, "deploy/cross-account-role.yaml inline policy")
    if cfn_actions is not None and reader_actions is not None:
        reader_but_sqs = {a for a in reader_actions if not a.lower().startswith("sqs:")}
        if cfn_actions == reader_but_sqs:
            ok("deploy/cross-account-role.yaml grants the same actions as deploy/iam-policy.json, but its SQS "
               "queue statement (the queue is read with the base identity only)")
        else:
            fail("deploy/cross-account-role.yaml and deploy/iam-policy.json (but its SQS statement) differ: "
                 f"only in the template {sorted(cfn_actions - reader_but_sqs)}, "
                 f"only in the JSON {sorted(reader_but_sqs - cfn_actions)}")
        # The cloudtrail source polls every collected account: the caller's own and each reader role's.
        for a in sorted(code_trail):
            if a in reader_actions and a in cfn_actions:
                ok(f"{a} is in deploy/iam-policy.json and deploy/cross-account-role.yaml alike "
                   "(the cloudtrail source polls through the caller's and every reader role's credentials)")
            else:
                fail(f"{a} must be in deploy/iam-policy.json and deploy/cross-account-role.yaml alike")
    params = cfn.get("Parameters", {})
    trust = json.dumps(props.get("AssumeRolePolicyDocument", {}))
    problems = []
    if params.get("RoleName", {}).get("Default") != "IamInventoryReader":
        problems.append("RoleName parameter should default to IamInventoryReader")
    if not params.get("ExternalId", {}).get("NoEcho"):
        problems.append("ExternalId parameter must be NoEcho")
    if "TrustedPrincipalArn" not in trust:
        problems.append("trust policy does not use TrustedPrincipalArn")
    if "sts:ExternalId" not in trust or '"!Ref": "ExternalId"' not in trust:
        problems.append("trust policy lacks the sts:ExternalId condition on the ExternalId parameter")
    if props.get("MaxSessionDuration") != 3600:
        problems.append("MaxSessionDuration should be 3600")
    if "RoleArn" not in (cfn.get("Outputs") or {}):
        problems.append("no RoleArn output")
    if assume is not None and "role/" + str(params.get("RoleName", {}).get("Default")) not in json.dumps(assume):
        problems.append("deploy/assume-role-policy.json does not target the template's default role name")
    if problems:
        fail("deploy/cross-account-role.yaml: " + "; ".join(problems))
    else:
        ok("deploy/cross-account-role.yaml: role IamInventoryReader, trust = TrustedPrincipalArn + sts:ExternalId (NoEcho), 1 h sessions, RoleArn output")

# The IAM events queue template (the sqs source).
def code_event_names():
    """USER_EVENTS, GROUP_EVENTS and POLICY_EVENTS of src/collect/events/mod.rs, or None."""
    try:
        text = open("src/collect/events/mod.rs").read()
    except OSError:
        return None
    names = set()
    for const in ("USER_EVENTS", "GROUP_EVENTS", "POLICY_EVENTS"):
        m = re.search(r"\b" + const + r"\s*:\s*&\[&str\]\s*=\s*&\[(.*?)\];", text, re.S)
        if not m:
            return None
        names |= set(re.findall(r'"([A-Za-z]+)"', m.group(1)))
    return names

def ref(v):
    return v.get("!Ref") if isinstance(v, dict) else None
def getatt(v):
    g = v.get("!GetAtt") if isinstance(v, dict) else None
    return g if isinstance(g, str) else (".".join(g) if isinstance(g, list) else None)

if not events_tmpl:
    fail("deploy/iam-events-queue.yaml is missing")
else:
    where = "deploy/iam-events-queue.yaml"
    res = events_tmpl.get("Resources") or {}
    params = events_tmpl.get("Parameters") or {}
    by_type = {}
    for name, r in res.items():
        by_type.setdefault(r.get("Type"), []).append((name, r.get("Properties") or {}))
    queues = dict(by_type.get("AWS::SQS::Queue", []))
    rules = by_type.get("AWS::Events::Rule", [])
    problems = []
    # us-east-1 only, asserted by a Rules section.
    rules_json = json.dumps(events_tmpl.get("Rules") or {})
    if '"AWS::Region"' not in rules_json or f'"{EVENTS_REGION}"' not in rules_json:
        problems.append(f"no Rules assertion that AWS::Region is {EVENTS_REGION}")
    if EVENTS_REGION not in str(events_tmpl.get("Description", "")):
        problems.append(f"the Description does not say {EVENTS_REGION}")
    # The events queue: the one with a RedrivePolicy; its dead-letter queue.
    main = [(n, p) for n, p in queues.items() if "RedrivePolicy" in p]
    if len(queues) != 2 or len(main) != 1:
        problems.append(f"expected 2 SQS queues, one with a RedrivePolicy; found {len(queues)}, {len(main)}")
        main_name = dlq_name = None
    else:
        main_name, q = main[0]
        redrive = q["RedrivePolicy"]
        dlq_name = (getatt(redrive.get("deadLetterTargetArn")) or "").split(".")[0]
        dlq = queues.get(dlq_name)
        if dlq is None:
            problems.append("the RedrivePolicy's deadLetterTargetArn is not !GetAtt <the other queue>.Arn")
            dlq = {}
        if ref(q.get("QueueName")) != "QueueName" or not queue_name:
            problems.append("the events queue's QueueName must be !Ref QueueName (with a Default)")
        for n, props_ in ((main_name, q), (dlq_name, dlq)):
            if props_.get("SqsManagedSseEnabled") is not True:
                problems.append(f"{n}: SqsManagedSseEnabled must be true")
            if props_.get("MessageRetentionPeriod") != 1209600:
                problems.append(f"{n}: MessageRetentionPeriod must be 1209600 (14 days)")
        if q.get("ReceiveMessageWaitTimeSeconds") != 20:
            problems.append("the events queue's ReceiveMessageWaitTimeSeconds must be 20")
        vis = params.get(ref(q.get("VisibilityTimeout")) or "", {})
        if vis.get("Default") != 120:
            problems.append("VisibilityTimeout must be !Ref a parameter defaulting to 120")
        mrc = params.get(ref(redrive.get("maxReceiveCount")) or "", {})
        if mrc.get("Default") != 5:
            problems.append("the RedrivePolicy's maxReceiveCount must be !Ref a parameter defaulting to 5")
    # The rule: default bus, the IAM CloudTrail pattern, every event the code acts on, the queue as target.
    code_events = code_event_names()
    if len(rules) != 1:
        problems.append(f"expected one AWS::Events::Rule, found {len(rules)}")
        rule_name = None
    else:
        rule_name, rp = rules[0]
        pat = rp.get("EventPattern") or {}
        detail = pat.get("detail") or {}
        if rp.get("EventBusName", "default") != "default":
            problems.append("the rule must be on the default event bus")
        if rp.get("State", "ENABLED") != "ENABLED":
            problems.append("the rule must be ENABLED")
        if pat.get("source") != ["aws.iam"] or pat.get("detail-type") != ["AWS API Call via CloudTrail"] \
                or detail.get("eventSource") != ["iam.amazonaws.com"]:
            problems.append('the EventPattern must be source ["aws.iam"], detail-type ["AWS API Call via '
                            'CloudTrail"], detail.eventSource ["iam.amazonaws.com"]')
        names = detail.get("eventName") or []
        if len(names) != len(set(names)):
            problems.append("detail.eventName lists a name twice")
        if code_events is None:
            problems.append("cannot read USER_EVENTS / GROUP_EVENTS / POLICY_EVENTS in src/collect/events/mod.rs")
        else:
            if code_events - set(names):
                problems.append(f"the rule does not send {sorted(code_events - set(names))}, which the daemon acts on")
            unknown = set(names) - code_events - set(rule_extra_events)
            if unknown:
                problems.append(f"the rule sends {sorted(unknown)}, which the daemon does not act on (remove, or "
                                "list in RULE_EXTRA_EVENTS of scripts/check-deploy.sh with the reason)")
        targets = rp.get("Targets") or []
        if len(targets) != 1 or getatt(targets[0].get("Arn")) != f"{main_name}.Arn":
            problems.append("the rule's only target must be the events queue")
    # The queue policy: EventBridge may send, and only from this rule; nobody else is allowed anything
    # but the optional consumer.
    qps = by_type.get("AWS::SQS::QueuePolicy", [])
    if len(qps) != 1:
        problems.append(f"expected one AWS::SQS::QueuePolicy, found {len(qps)}")
    elif main_name and rule_name:
        qp = qps[0][1]
        if main_name not in [ref(x) for x in qp.get("Queues") or []]:
            problems.append("the QueuePolicy does not apply to the events queue")
        sts = []
        for st in (qp.get("PolicyDocument") or {}).get("Statement", []):
            if isinstance(st, dict) and "!If" in st:  # [condition, statement, AWS::NoValue]
                st = st["!If"][1]
            if isinstance(st, dict) and st.get("Effect") == "Allow":
                sts.append(st)
        sends_main = False
        for st in sts:
            principal = st.get("Principal")
            acts = st.get("Action")
            acts = [acts] if isinstance(acts, str) else (acts or [])
            cond = json.dumps(st.get("Condition") or {})
            if principal == {"Service": "events.amazonaws.com"}:
                if acts != ["sqs:SendMessage"] and set(acts) != {"sqs:SendMessage"}:
                    problems.append(f"events.amazonaws.com may only sqs:SendMessage, is given {acts}")
                if '"aws:SourceArn"' not in cond or f'"!GetAtt": "{rule_name}.Arn"' not in cond:
                    problems.append("events.amazonaws.com's SendMessage lacks the aws:SourceArn = the rule condition")
                if getatt(st.get("Resource")) == f"{main_name}.Arn":
                    sends_main = True
            elif isinstance(principal, dict) and ref(principal.get("AWS")):
                if set(acts) != SQS_CONSUME:
                    problems.append(f"the consumer statement must grant exactly {sorted(SQS_CONSUME)}")
            else:
                problems.append(f"the QueuePolicy allows an unexpected principal {principal!r}")
        if not sends_main:
            problems.append("no statement lets events.amazonaws.com send to the events queue")
    outs = set(events_tmpl.get("Outputs") or {})
    if {"QueueUrl", "QueueArn", "DeadLetterQueueUrl"} - outs:
        problems.append(f"missing outputs {sorted({'QueueUrl', 'QueueArn', 'DeadLetterQueueUrl'} - outs)}")
    if problems:
        fail(f"{where}: " + "; ".join(dict.fromkeys(problems)))
    else:
        extras = sorted(set(names) - (code_events or set()))
        ok(f"{where}: us-east-1 only; queue {queue_name} (SSE-SQS, 14 days, long polling, visibility 120 s) "
           f"with a dead-letter queue after 5 receipts; default-bus rule on aws.iam CloudTrail calls sending the "
           f"{len(code_events)} events the daemon acts on" + (f" (+ {', '.join(extras)})" if extras else "")
           + "; only that rule may send; QueueUrl/QueueArn/DeadLetterQueueUrl outputs")

# Kubernetes manifests.
k8s = []
for path, ds in docs.items():
    if path.startswith("deploy/kubernetes/"):
        k8s += [(path, d) for d in ds if isinstance(d, dict) and "kind" in d]
by_kind = {}
for path, d in k8s:
    by_kind.setdefault(d["kind"], []).append(d)
def manifest(name, kind):
    """The first object of this kind in deploy/kubernetes/<name> (several files hold a CronJob or a claim)."""
    for path, d in k8s:
        if path == f"deploy/kubernetes/{name}" and d["kind"] == kind:
            return d
    raise KeyError(f"no {kind} in deploy/kubernetes/{name}")
want = ["Deployment", "CronJob", "PersistentVolumeClaim", "ConfigMap", "ServiceAccount"]
missing = [k for k in want if k not in by_kind]
if missing:
    fail(f"deploy/kubernetes/ lacks {', '.join(missing)}")
else:
    ok(f"deploy/kubernetes/ has {', '.join(want)}" + (" (+ " + ", ".join(sorted(set(by_kind) - set(want))) + ")" if set(by_kind) - set(want) else ""))

def pod_spec(obj):
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]

if not missing:
    try:
        dep, cron = manifest("deployment.yaml", "Deployment"), manifest("cronjob.yaml", "CronJob")
        pvc, cm = manifest("pvc.yaml", "PersistentVolumeClaim"), manifest("configmap.yaml", "ConfigMap")
        sa = manifest("serviceaccount.yaml", "ServiceAccount")
        # Probes.
        c = pod_spec(dep)["containers"][0]
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        def probe(name):
            g = (c.get(name) or {}).get("httpGet") or {}
            return g.get("path"), ports.get(g.get("port"), g.get("port"))
        bad = []
        if probe("readinessProbe") != ("/healthz", 9464):
            bad.append(f"readinessProbe must be GET /healthz on 9464, is {probe('readinessProbe')}")
        # /healthz is 503 after a failed or partial sync until the next good one: as a liveness probe it
        # would restart the pod (and start a sync) over and over. Liveness asks only "is it serving?".
        if probe("livenessProbe") != ("/metrics", 9464):
            bad.append(f"livenessProbe must be GET /metrics on 9464 (not /healthz: a failed sync is not fixed by a restart), is {probe('livenessProbe')}")
        if bad:
            fail("Deployment probes: " + "; ".join(bad))
        else:
            ok("Deployment probes: readiness GET /healthz, liveness GET /metrics, on 9464")
        # Single writer.
        problems = []
        if dep["spec"].get("replicas") != 1:
            problems.append("Deployment replicas must be 1")
        if (dep["spec"].get("strategy") or {}).get("type") != "Recreate":
            problems.append("Deployment strategy must be Recreate")
        if cron["spec"].get("concurrencyPolicy") != "Forbid":
            problems.append("CronJob concurrencyPolicy must be Forbid")
        if "run" not in c.get("args", []):
            problems.append("Deployment does not run `run`")
        cc = pod_spec(cron)["containers"][0]
        if "sync" not in cc.get("args", []):
            problems.append("CronJob does not run `sync`")
        if problems:
            fail("; ".join(problems))
        else:
            ok("single writer: Deployment 1 replica, Recreate, `run`; CronJob Forbid, `sync`")
        # Wiring: the same PVC, ConfigMap and ServiceAccount; mounts where the image expects them.
        problems = []
        for obj in (dep, cron):
            spec = pod_spec(obj)
            ctr = spec["containers"][0]
            env = {e["name"]: e.get("value") for e in ctr.get("env", [])}
            config_path = env.get("IAM_INVENTORY_CONFIG", "/etc/iam-inventory/iam-inventory.toml")
            store_path = env.get("IAM_INVENTORY__STORE__PATH", "/var/lib/iam-inventory/iam-inventory.db")
            vols = {v["name"]: v for v in spec.get("volumes", [])}
            mounts = {m["mountPath"]: m["name"] for m in ctr.get("volumeMounts", [])}
            k = obj["kind"]
            if spec.get("serviceAccountName") != sa["metadata"]["name"]:
                problems.append(f"{k} does not use ServiceAccount {sa['metadata']['name']}")
            store_vol = vols.get(mounts.get(posixpath.dirname(store_path)), {})
            if (store_vol.get("persistentVolumeClaim") or {}).get("claimName") != pvc["metadata"]["name"]:
                problems.append(f"{k}: {posixpath.dirname(store_path)} is not the PVC {pvc['metadata']['name']}")
            cfg_vol = vols.get(mounts.get(posixpath.dirname(config_path)), {})
            if (cfg_vol.get("configMap") or {}).get("name") != cm["metadata"]["name"]:
                problems.append(f"{k}: {posixpath.dirname(config_path)} is not the ConfigMap {cm['metadata']['name']}")
            if posixpath.basename(config_path) not in cm.get("data", {}):
                problems.append(f"ConfigMap has no key {posixpath.basename(config_path)}")
            psc, csc = spec.get("securityContext", {}), ctr.get("securityContext", {})
            if not psc.get("runAsNonRoot") or not csc.get("readOnlyRootFilesystem") or csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{k}: needs runAsNonRoot, readOnlyRootFilesystem, allowPrivilegeEscalation: false")
            if "/tmp" not in mounts:
                problems.append(f"{k}: no writable /tmp for SQLite (read-only root filesystem)")
        if "eks.amazonaws.com/role-arn" not in (sa["metadata"].get("annotations") or {}):
            problems.append("ServiceAccount lacks the eks.amazonaws.com/role-arn (IRSA) annotation")
        if problems:
            fail("; ".join(problems))
        else:
            ok("Deployment and CronJob share the PVC, ConfigMap (at the config path) and IRSA ServiceAccount; non-root, read-only root")
        with open(os.path.join(os.environ.get("WORK", "/tmp"), "configmap.toml"), "w") as f:
            f.write(cm["data"][posixpath.basename(config_path)])
    except (KeyError, IndexError, TypeError) as e:
        fail(f"deploy/kubernetes/: unexpected manifest shape ({type(e).__name__}: {e})")

# The sharded CronJob (deploy/kubernetes/sharded-cronjob.yaml): an Indexed Job whose pod I runs
# `--shard I/N sync` on its own store. Kubernetes' $(VAR) expansion is emulated as the kubelet does it: an
# env value sees only the variables defined EARLIER in the list, args see them all, an unknown $(VAR)
# stays as it is, $$ is a literal $; the Job controller appends JOB_COMPLETION_INDEX (from the
# batch.kubernetes.io/job-completion-index annotation) when the container does not declare it.
SHARDED = "deploy/kubernetes/sharded-cronjob.yaml"
INDEX_VAR = "JOB_COMPLETION_INDEX"
INDEX_FIELDS = {f"metadata.{w}['batch.kubernetes.io/job-completion-index']" for w in ("annotations", "labels")}
def k8s_expand(text, env):
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), str(text))
def pod_env(ctr, index):
    """The container's environment for this completion index, as the kubelet resolves it."""
    env = {}
    for e in ctr.get("env", []):
        if "value" in e:
            env[e["name"]] = k8s_expand(e["value"], env)
        elif ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") in INDEX_FIELDS:
            env[e["name"]] = str(index)
    env.setdefault(INDEX_VAR, str(index))
    return env

if SHARDED not in docs:
    fail(f"{SHARDED} is missing (the sharded sync; see deploy/README.md)")
else:
    try:
        scron = manifest("sharded-cronjob.yaml", "CronJob")
        cron = manifest("cronjob.yaml", "CronJob")
        job = scron["spec"]["jobTemplate"]["spec"]
        spec, base_spec = pod_spec(scron), pod_spec(cron)
        ctr, base = spec["containers"][0], base_spec["containers"][0]
        problems, notes = [], []
        # An Indexed Job of N pods at once, retried per index, never two runs at once.
        n = job.get("completions")
        if job.get("completionMode") != "Indexed":
            problems.append(f"jobTemplate completionMode must be Indexed, is {job.get('completionMode')!r}")
        if not isinstance(n, int) or n < 1:
            problems.append(f"jobTemplate completions must be N >= 1, is {n!r}")
            n = None
        elif job.get("parallelism") != n:
            problems.append(f"parallelism ({job.get('parallelism')}) must equal completions ({n}): every shard at once")
        if scron["spec"].get("concurrencyPolicy") != "Forbid":
            problems.append("concurrencyPolicy must be Forbid (one writer per store)")
        if spec.get("restartPolicy") != "Never":
            problems.append("restartPolicy must be Never (backoffLimitPerIndex and podFailurePolicy need it)")
        if not isinstance(job.get("backoffLimitPerIndex"), int):
            problems.append("backoffLimitPerIndex must be set (a failing shard must not use up the others' retries)")
        if job.get("maxFailedIndexes") is not None:
            notes.append(f"maxFailedIndexes {job['maxFailedIndexes']}")
        # podFailurePolicy: about this container, Ignore only for disruptions, FailIndex only with
        # backoffLimitPerIndex; exit 1 (fatal) and 2 (partial) are never retried.
        actions = {}
        for rule in (job.get("podFailurePolicy") or {}).get("rules", []):
            codes = rule.get("onExitCodes")
            if codes:
                if codes.get("containerName") not in (None, ctr["name"]):
                    problems.append(f"podFailurePolicy names container {codes.get('containerName')!r}, not {ctr['name']!r}")
                if codes.get("operator") == "In":
                    for v in codes.get("values", []):
                        actions.setdefault(v, rule["action"])
            elif rule.get("action") == "Ignore" and any(
                    c.get("type") != "DisruptionTarget" for c in rule.get("onPodConditions", [])):
                problems.append("podFailurePolicy ignores (= retries without limit) more than DisruptionTarget")
        for code, meaning in ((1, "fatal"), (2, "partial")):
            if actions.get(code) not in ("FailIndex", "FailJob"):
                problems.append(f"podFailurePolicy: exit {code} ({meaning}) must be FailIndex (or FailJob), not retried: "
                                f"is {actions.get(code, 'Count (retried)')}")
        # The same image, identity, config, Secret and hardening as cronjob.yaml.
        same = {
            "image": (ctr.get("image"), base.get("image")),
            "serviceAccountName": (spec.get("serviceAccountName"), base_spec.get("serviceAccountName")),
            "automountServiceAccountToken": (spec.get("automountServiceAccountToken"), base_spec.get("automountServiceAccountToken")),
            "pod securityContext": (spec.get("securityContext"), base_spec.get("securityContext")),
            "container securityContext": (ctr.get("securityContext"), base.get("securityContext")),
            "resources": (ctr.get("resources"), base.get("resources")),
            "envFrom": (ctr.get("envFrom"), base.get("envFrom")),
            "IAM_INVENTORY_CONFIG": ({e["name"]: e.get("value") for e in ctr.get("env", [])}.get("IAM_INVENTORY_CONFIG"),
                                     {e["name"]: e.get("value") for e in base.get("env", [])}.get("IAM_INVENTORY_CONFIG")),
        }
        for what, (mine, theirs) in same.items():
            if mine != theirs:
                problems.append(f"{what} differs from cronjob.yaml's ({mine!r} vs {theirs!r})")
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        base_vols = {v["name"]: v for v in base_spec.get("volumes", [])}
        mounts = {m["mountPath"]: m["name"] for m in ctr.get("volumeMounts", [])}
        base_mounts = {m["mountPath"]: m["name"] for m in base.get("volumeMounts", [])}
        def mounted(vs, ms, path):
            """The volume mounted at path, without its name."""
            return {k: v for k, v in vs.get(ms.get(path), {}).items() if k != "name"} or None
        for path in ("/etc/iam-inventory", "/tmp"):
            if mounted(vols, mounts, path) is None or mounted(vols, mounts, path) != mounted(base_vols, base_mounts, path):
                problems.append(f"{path} is not mounted as in cronjob.yaml")
        # `--shard $(JOB_COMPLETION_INDEX)/N sync`, and a store file per index, per pod as it will run.
        args = [str(a) for a in ctr.get("args", [])]
        shard_args = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--shard"] + \
                     [a.split("=", 1)[1] for a in args if a.startswith("--shard=")]
        m = re.fullmatch(r"\$\(" + INDEX_VAR + r"\)/(\d+)", shard_args[0]) if len(shard_args) == 1 else None
        if not m:
            problems.append(f"args must hold `--shard $({INDEX_VAR})/N` once, found {shard_args or 'none'}")
        elif n is not None and int(m.group(1)) != n:
            problems.append(f"--shard …/{m.group(1)} but completions is {n}: the shards would not cover every account once")
        if "sync" not in args:
            problems.append("args do not run `sync`")
        env_names = [e["name"] for e in ctr.get("env", [])]
        store_tmpl = {e["name"]: e.get("value") for e in ctr.get("env", [])}.get("IAM_INVENTORY__STORE__PATH")
        if not store_tmpl or f"$({INDEX_VAR})" not in posixpath.basename(store_tmpl):
            problems.append(f"IAM_INVENTORY__STORE__PATH must name a file per index ($({INDEX_VAR}) in its name), is {store_tmpl!r}")
        elif INDEX_VAR not in env_names or env_names.index(INDEX_VAR) > env_names.index("IAM_INVENTORY__STORE__PATH"):
            problems.append(f"{INDEX_VAR} must be declared in env (downward API, annotation "
                            f"batch.kubernetes.io/job-completion-index) BEFORE IAM_INVENTORY__STORE__PATH: the Job "
                            f"controller appends it, and an env value only sees variables defined earlier, so every "
                            f"pod would get the literal path {store_tmpl!r}")
        else:
            counts = {int(x) for x in re.findall(r"\d+", posixpath.basename(store_tmpl).replace(f"$({INDEX_VAR})", ""))}
            if counts and counts != {n}:
                problems.append(f"the store file name {posixpath.basename(store_tmpl)!r} carries {sorted(counts)}, not N = {n}")
            notes.append("store name with N" if counts else "store name without N (stores kept across a re-shard)")
        if not problems and n is not None:
            work = os.environ.get("WORK", "/tmp")
            stores = []
            for i in range(n):
                env = pod_env(ctr, i)
                pargs = [k8s_expand(a, env) for a in args]
                store = env.get("IAM_INVENTORY__STORE__PATH", "")
                stores.append(store)
                if f"{i}/{n}" not in pargs or "$(" in store or "$(" in " ".join(pargs):
                    problems.append(f"pod {i} would run {pargs} on {store!r}")
                with open(os.path.join(work, f"shard-args-{i}"), "w") as f:
                    f.write("\n".join(pargs) + "\n")
                with open(os.path.join(work, f"shard-store-{i}"), "w") as f:
                    f.write(store + "\n")
            with open(os.path.join(work, "shard-count"), "w") as f:
                f.write(f"{n}\n")
            with open(os.path.join(work, "shard-flags"), "w") as f:
                f.write("\n".join(a.split("=", 1)[0] for a in args[: args.index("sync")] if a.startswith("--")) + "\n")
            if len(set(stores)) != n:
                problems.append(f"pods share a store: {stores}")
            # The store directory: a claim declared here, ReadWriteMany when pods run side by side.
            claim = (vols.get(mounts.get(posixpath.dirname(stores[0])), {}).get("persistentVolumeClaim") or {}).get("claimName")
            pvcs = {d["metadata"]["name"]: d for _, d in k8s if d["kind"] == "PersistentVolumeClaim"}
            if claim not in pvcs:
                problems.append(f"{posixpath.dirname(stores[0])} is not a PersistentVolumeClaim declared in deploy/kubernetes/ ({claim!r})")
            elif n > 1 and "ReadWriteMany" not in pvcs[claim]["spec"].get("accessModes", []):
                problems.append(f"claim {claim} must be ReadWriteMany: {n} pods on different nodes mount it")
            elif claim == (base_vols.get(base_mounts.get("/var/lib/iam-inventory"), {}).get("persistentVolumeClaim") or {}).get("claimName"):
                problems.append(f"claim {claim} is the unsharded store's (pvc.yaml): give the shards their own")
        if problems:
            fail(f"{SHARDED}: " + "; ".join(problems))
        else:
            ok(f"{SHARDED}: Indexed Job, completions = parallelism = {n} = --shard …/{n}; pod 0 runs "
               f"`{' '.join(k8s_expand(a, pod_env(ctr, 0)) for a in args)}` "
               f"on {stores[0]} … {stores[-1]} ({'; '.join(notes)}), claim {claim} ReadWriteMany; "
               f"backoffLimitPerIndex {job['backoffLimitPerIndex']}, exit 1 and 2 {actions[1]}/{actions[2]}; "
               f"Forbid; same image, ServiceAccount, ConfigMap, Secret and hardening as cronjob.yaml")
    except (KeyError, IndexError, TypeError, ValueError) as e:
        fail(f"{SHARDED}: unexpected manifest shape ({type(e).__name__}: {e})")

# Dockerfile.
try:
    text = open("Dockerfile").read()
except OSError:
    text = None
    fail("Dockerfile is missing")
if text is not None:
    lines = re.sub(r"\\\n", " ", text).splitlines()
    instr = [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]
    builds = [l for l in instr if l.startswith("RUN") and "cargo build" in l]
    if builds and re.search(r"\bcargo build --release --locked( --bin iam-inventory)?\s*$", builds[-1]):
        ok(f"Dockerfile's final build is `{builds[-1][4:].strip()}`")
    else:
        fail(f"Dockerfile's final build step must be `cargo build --release --locked --bin iam-inventory`, found {builds[-1:] or 'none'}")
    health = [l for l in instr if l.startswith("HEALTHCHECK")]
    users = [l.split()[1] for l in instr if l.startswith("USER")]
    problems = []
    if not health or "/healthz" not in health[-1] or "9464" not in health[-1]:
        problems.append("HEALTHCHECK must hit :9464/healthz")
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"final USER must be non-root (found {users[-1] if users else 'none'})")
    if not any(l.startswith("EXPOSE") and "9464" in l for l in instr):
        problems.append("EXPOSE 9464 missing")
    if not any(l.startswith("ENTRYPOINT") and "iam-inventory" in l for l in instr) or not any(l.startswith("CMD") and '"run"' in l for l in instr):
        problems.append('ENTRYPOINT ["iam-inventory"] / CMD ["run"] missing')
    for needed in ("IAM_INVENTORY_CONFIG=/etc/iam-inventory/iam-inventory.toml",
                   "IAM_INVENTORY__STORE__PATH=/var/lib/iam-inventory/iam-inventory.db",
                   "IAM_INVENTORY__SERVER__LISTEN=0.0.0.0:9464"):
        if needed not in text:
            problems.append(f"ENV {needed} missing")
    if not any(l.startswith("VOLUME") and "/var/lib/iam-inventory" in l for l in instr):
        problems.append("VOLUME /var/lib/iam-inventory missing")
    if problems:
        fail("Dockerfile: " + "; ".join(problems))
    else:
        ok(f"Dockerfile: USER {users[-1]}, HEALTHCHECK /healthz, EXPOSE 9464, VOLUME store, ENTRYPOINT iam-inventory run")
    # The builder image's Rust is at least the crate's rust-version.
    m = re.search(r"^ARG RUST_VERSION=(\d+)\.(\d+)", text, re.M)
    cargo = open("Cargo.toml").read()
    r = re.search(r'^rust-version\s*=\s*"(\d+)\.(\d+)', cargo, re.M)
    if m and r and tuple(map(int, m.groups())) >= tuple(map(int, r.groups())):
        ok(f"Dockerfile's rust:{m.group(1)}.{m.group(2)} satisfies Cargo.toml rust-version {r.group(1)}.{r.group(2)}")
    elif m and not r:
        ok(f"Dockerfile's rust:{m.group(1)}.{m.group(2)} (Cargo.toml sets no rust-version)")
    else:
        fail(f"Dockerfile's ARG RUST_VERSION ({m.group(0) if m else 'missing'}) is older than Cargo.toml's rust-version")
    # The build context keeps what the build needs and drops the rest.
    try:
        ignored = {l.strip().strip("/") for l in open(".dockerignore") if l.strip() and not l.startswith("#")}
        needs = {"src", "tests", "migrations", "config", "Cargo.toml", "Cargo.lock"} & ignored
        drops = {"target", ".git", ".venv", "data"} - ignored
        if needs or drops:
            fail(f".dockerignore: must keep {sorted(needs)}, must drop {sorted(drops)}")
        else:
            ok(".dockerignore drops target, .git, .venv, data and keeps the sources, tests and migrations")
    except OSError:
        fail(".dockerignore is missing")
PY
  tally <"$work/py.out"
else
  fail "$py with PyYAML is needed for the JSON/YAML/Kubernetes/policy checks: run scripts/bootstrap.sh"
fi

# --- CloudFormation: cfn-lint (installed with moto[server] in ./.venv) ---------------------------------------
cfn_lint=""
for c in ./.venv/bin/cfn-lint "$(command -v cfn-lint || true)"; do
  [ -n "$c" ] && [ -x "$c" ] && { cfn_lint=$c; break; }
done
if [ -n "$cfn_lint" ]; then
  # The events queue template is linted for us-east-1, the only region it deploys to (its Rules say so).
  for t in deploy/cross-account-role.yaml "deploy/iam-events-queue.yaml --regions us-east-1"; do
    # shellcheck disable=SC2086 # the template's extra cfn-lint options split on purpose
    if out=$("$cfn_lint" $t 2>&1); then
      ok "cfn-lint $t"
    else
      fail "cfn-lint $t: $(tr '\n' ' ' <<<"$out")"
    fi
  done
else
  skip "cfn-lint not installed (comes with moto[server] in ./.venv: scripts/bootstrap.sh)"
fi

# --- Kubernetes: the manifests against the API schema (kubernetes-validate, offline) ----------------------------
# 1.31: the oldest Kubernetes the manifests are written for (CronJob timeZone, Job podFailurePolicy; the sharded
# CronJob's backoffLimitPerIndex and FailIndex are beta, on by default, since 1.29, GA in 1.33).
if [ -x ./.venv/bin/kubernetes-validate ]; then
  if out=$(./.venv/bin/kubernetes-validate --strict --quiet --no-warn -k 1.31.0 deploy/kubernetes/*.yaml 2>&1); then
    ok "kubernetes-validate --strict (Kubernetes 1.31 schema) deploy/kubernetes/*.yaml"
  else
    fail "kubernetes-validate: $(tr '\n' ' ' <<<"$out")"
  fi
else
  skip "Kubernetes schema check: kubernetes-validate not in ./.venv (tests/support/requirements.txt)"
fi

# --- systemd units -------------------------------------------------------------------------------------------
units=(deploy/systemd/*.service deploy/systemd/*.timer)
if command -v systemd-analyze >/dev/null; then
  # verify refuses a missing ExecStart binary, and only warns (exit 0) on unknown keys or bad values; so it
  # runs on copies whose ExecStart points to a stub, and any output at all is a failure.
  mkdir -p "$work/units"
  printf '#!/bin/sh\nexit 0\n' >"$work/units/iam-inventory"
  chmod +x "$work/units/iam-inventory"
  for u in "${units[@]}"; do
    sed "s#/usr/local/bin/iam-inventory#$work/units/iam-inventory#g" "$u" >"$work/units/$(basename "$u")"
  done
  if out=$(cd "$work/units" && systemd-analyze verify --man=no ./*.service ./*.timer 2>&1) && [ -z "$out" ]; then
    ok "systemd-analyze verify ${units[*]}"
  else
    out=${out//$work\/units\//}
    fail "systemd-analyze verify: ${out//$'\n'/ }"
  fi
else
  skip "systemd-analyze not installed"
fi
missing=()
for d in DynamicUser=yes StateDirectory=iam-inventory ConfigurationDirectory=iam-inventory ProtectSystem=strict \
  ProtectHome=yes PrivateTmp=yes NoNewPrivileges=yes 'CapabilityBoundingSet=$' \
  'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' SystemCallFilter=@system-service \
  'EnvironmentFile=-/etc/iam-inventory/env' 'Environment=IAM_INVENTORY_CONFIG=/etc/iam-inventory/iam-inventory.toml' \
  'Environment=IAM_INVENTORY__STORE__PATH=/var/lib/iam-inventory/iam-inventory.db' TimeoutStopSec=60; do
  for u in deploy/systemd/*.service; do
    grep -qE "^$d" "$u" || missing+=("$(basename "$u"): $d")
  done
done
grep -q '^ExecStart=/usr/local/bin/iam-inventory run$' deploy/systemd/iam-inventory.service || missing+=("iam-inventory.service: ExecStart=/usr/local/bin/iam-inventory run")
grep -q '^Restart=on-failure$' deploy/systemd/iam-inventory.service || missing+=("iam-inventory.service: Restart=on-failure")
if [ ${#missing[@]} -eq 0 ]; then
  ok "systemd units: DynamicUser, StateDirectory, ProtectSystem=strict, no capabilities, @system-service, TimeoutStopSec=60"
else
  fail "systemd units lack: ${missing[*]}"
fi

# --- the shipped configs load (needs a built binary; `cargo test` leaves target/debug/iam-inventory) ---------
bin=${IAM_INVENTORY_BIN:-target/debug/iam-inventory}
stale=""
[ -x "$bin" ] && stale=$(find src Cargo.toml Cargo.lock -newer "$bin" -print -quit)
if [ -x "$bin" ] && [ -n "$stale" ]; then
  skip "config and CLI checks: $bin is older than $stale (cargo build, then run again)"
elif [ -x "$bin" ]; then
  docker_env=(IAM_INVENTORY_CONFIG=config/iam-inventory.toml IAM_INVENTORY__STORE__PATH="$work/store/i.db"
    IAM_INVENTORY__SERVER__LISTEN=0.0.0.0:9464)
  if out=$(env -i PATH="$PATH" "${docker_env[@]}" "$bin" check-config 2>&1 >/dev/null); then
    ok "the image's default config + ENV pass check-config"
  else
    fail "the image's default config + ENV fail check-config: $out"
  fi
  if [ -f "$work/configmap.toml" ]; then
    if out=$(env -i PATH="$PATH" IAM_INVENTORY__STORE__PATH="$work/store/i.db" IAM_INVENTORY__SERVER__LISTEN=0.0.0.0:9464 \
      SIEM_TOKEN=x IAM_INVENTORY_EXTERNAL_ID=x "$bin" --config "$work/configmap.toml" check-config 2>&1 >/dev/null); then
      ok "deploy/kubernetes/configmap.yaml's config passes check-config"
    else
      fail "deploy/kubernetes/configmap.yaml's config fails check-config: $out"
    fi
  fi
  # The sharded CronJob's pods as they will run (the structured checks above expanded $(VAR) in their args
  # and store path, per index, as the kubelet does): the flags before the subcommand are global flags of
  # `iam-inventory --help`, and each pod's arguments, `sync` swapped for `check-config`, resolve with the
  # ConfigMap's config to its own shard I of N.
  if [ -f "$work/shard-count" ] && [ -f "$work/configmap.toml" ]; then
    n=$(cat "$work/shard-count")
    help=$("$bin" --help 2>&1 || true)
    problems=()
    flags=()
    while IFS= read -r flag; do
      [ -z "$flag" ] && continue
      flags+=("$flag")
      grep -qE -- "(^|[ ,])$flag([ =,]|$)" <<<"$help" || problems+=("$flag is not in \`iam-inventory --help\`")
    done <"$work/shard-flags"
    for ((i = 0; i < n; i++)); do
      mapfile -t args <"$work/shard-args-$i"
      store=$(cat "$work/shard-store-$i")
      for j in "${!args[@]}"; do [ "${args[$j]}" = sync ] && args[j]=check-config; done
      if out=$(env -i PATH="$PATH" IAM_INVENTORY_CONFIG="$work/configmap.toml" \
        IAM_INVENTORY__STORE__PATH="$work/store/$(basename "$store")" IAM_INVENTORY__SERVER__LISTEN=0.0.0.0:9464 \
        SIEM_TOKEN=x IAM_INVENTORY_EXTERNAL_ID=x "$bin" "${args[@]}" 2>&1); then
        resolved=$(sed -n '/^\[shard\]$/,/^$/p' <<<"$out" | tr -d ' ' | grep -E '^(index|count)=' | sort | tr '\n' ' ' || true)
        [ "$resolved" = "count=$n index=$i " ] || { [ "$n" = 1 ] && [ -z "$resolved" ]; } ||
          problems+=("pod $i resolves [shard] to '${resolved% }', not index=$i count=$n")
      else
        problems+=("pod $i (${args[*]}) fails: $(head -1 <<<"$out")")
      fi
    done
    if [ ${#problems[@]} -eq 0 ]; then
      ok "deploy/kubernetes/sharded-cronjob.yaml: ${flags[*]} in \`iam-inventory --help\`; pods 0..$((n - 1)) pass check-config as shard I of $n"
    else
      fail "deploy/kubernetes/sharded-cronjob.yaml against $bin: $(printf '%s; ' "${problems[@]}")"
    fi
  fi
else
  skip "config and CLI checks: no $bin (build it, or set IAM_INVENTORY_BIN)"
fi

summary="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && summary="$summary, $skipped skipped"
echo "$summary"
[ "$failed" -eq 0 ]
