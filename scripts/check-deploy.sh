#!/usr/bin/env bash
# Checks the packaging and deployment files (Dockerfile, deploy/) against the code, without Docker, AWS or
# a Kubernetes cluster:
#   - the IAM policies grant exactly the AWS calls the code makes (every "iam:X" / "sts:X" label in src/),
#   - every JSON / YAML file parses; the CloudFormation template passes cfn-lint,
#   - the Kubernetes manifests have the expected kinds and wiring, probes on /healthz,
#   - the systemd units pass `systemd-analyze verify`,
#   - the Dockerfile builds with `cargo build --release --locked`, runs as non-root, checks /healthz,
#   - the shipped configs pass `iam-inventory check-config` (when a built binary is there).
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
code_actions=$(grep -rhoE '"(iam|sts|organizations):[A-Za-z]+"' src/ | tr -d '"' | sort -u || true)
if [ -n "$code_actions" ]; then
  ok "code makes $(wc -l <<<"$code_actions") distinct AWS calls: $(tr '\n' ' ' <<<"$code_actions")"
else
  fail 'no "iam:X" / "sts:X" operation labels found in src/ (did CollectError::from_sdk labels change?)'
fi

# --- structured checks: policies, JSON, YAML, CloudFormation, Kubernetes, Dockerfile -------------------------
if [ -x "$py" ] && "$py" -c 'import yaml' 2>/dev/null; then
  WORK="$work" CODE_ACTIONS="$code_actions" NO_PERMISSION_NEEDED="$NO_PERMISSION_NEEDED" \
    ALLOWED_EXTRA="$(printf '%s\n' "${ALLOWED_EXTRA[@]+"${ALLOWED_EXTRA[@]}"}")" \
    "$py" - >"$work/py.out" 2>&1 <<'PY' || echo "FAIL: the structured checks crashed (see the lines above)" >>"$work/py.out"
import glob, json, os, posixpath, re, sys
import yaml

def ok(msg): print(f"ok: {msg}")
def fail(msg): print(f"FAIL: {msg}")

code = set(os.environ["CODE_ACTIONS"].split())
exempt = set(os.environ["NO_PERMISSION_NEEDED"].split())
extra = {}
for line in os.environ["ALLOWED_EXTRA"].splitlines():
    if "|" in line:
        action, reason = line.split("|", 1)
        extra[action] = reason
code_iam = {a for a in code if a.startswith("iam:")}
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

reader = docs.get("deploy/iam-policy.json")
reader_actions = allowed_actions(reader, "deploy/iam-policy.json") if reader is not None else None
if reader is None:
    fail("deploy/iam-policy.json is missing")
check_policy(reader_actions, "deploy/iam-policy.json", code_iam, set(extra))

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
    check_policy(cfn_actions, "deploy/cross-account-role.yaml inline policy", code_iam, set(extra))
    if cfn_actions is not None and reader_actions is not None:
        if cfn_actions == reader_actions:
            ok("deploy/cross-account-role.yaml grants the same actions as deploy/iam-policy.json")
        else:
            fail("deploy/cross-account-role.yaml and deploy/iam-policy.json differ: "
                 f"only in the template {sorted(cfn_actions - reader_actions)}, "
                 f"only in the JSON {sorted(reader_actions - cfn_actions)}")
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

# Kubernetes manifests.
k8s = []
for path, ds in docs.items():
    if path.startswith("deploy/kubernetes/"):
        k8s += [(path, d) for d in ds if isinstance(d, dict) and "kind" in d]
by_kind = {}
for path, d in k8s:
    by_kind.setdefault(d["kind"], []).append(d)
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
        dep, cron = by_kind["Deployment"][0], by_kind["CronJob"][0]
        pvc, cm, sa = by_kind["PersistentVolumeClaim"][0], by_kind["ConfigMap"][0], by_kind["ServiceAccount"][0]
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
  if out=$("$cfn_lint" deploy/cross-account-role.yaml 2>&1); then
    ok "cfn-lint deploy/cross-account-role.yaml"
  else
    fail "cfn-lint deploy/cross-account-role.yaml: $(tr '\n' ' ' <<<"$out")"
  fi
else
  skip "cfn-lint not installed (comes with moto[server] in ./.venv: scripts/bootstrap.sh)"
fi

# --- Kubernetes: the manifests against the API schema (kubernetes-validate, offline) ----------------------------
# 1.31: the oldest Kubernetes the manifests are written for (CronJob timeZone, Job podFailurePolicy).
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
  skip "config checks: $bin is older than $stale (cargo build, then run again)"
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
else
  skip "config checks: no $bin (build it, or set IAM_INVENTORY_BIN)"
fi

summary="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && summary="$summary, $skipped skipped"
echo "$summary"
[ "$failed" -eq 0 ]
