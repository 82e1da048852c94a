# shellcheck shell=bash
# Worker instance bootstrap (EC2 user data), for stock Amazon Linux 2023 or Ubuntu 24.04.
#
# `sumpipe deploy` renders this file into the template: it prepends `#!/bin/bash` and these variables,
# all taken from the stack (never from job input):
#   SUMPIPE_REGION  ARTIFACTS_BUCKET  ARTIFACTS_BUCKET_OWNER  WHEEL_KEY  WHEELHOUSE_KEY  WORKER_PYTHON  KNOWN_HOSTS_PARAMETER
#   SSH_PUBLIC_KEY  IDLE_SHUTDOWN_MINUTES  JOB_TABLE  OUTPUT_BUCKET  JOB_DEADLINE
#
# Two steps, so that an image can be baked once (an AMI, or the local stack's cached image) and each
# instance only configures itself:
#   bake       Python $WORKER_PYTHON and a venv in /opt/sumpipe/venv holding the project's dependencies,
#              installed from the wheelhouse in the artifacts bucket (no package index needed: an
#              instance in a private subnet installs the same way). Skipped when the venv carries
#              the baked mark (a baked image). SUMPIPE_BAKE_ONLY=1 in the environment stops after it.
#   configure  user `sumpipe`; the project wheel in /opt/sumpipe/app; the runner's settings in
#              /etc/sumpipe/runner.env, read by /opt/sumpipe/job-runner (the forced command); the
#              pipeline's key in authorized_keys; and these units:
#     sumpipe-publish-hostkey.service: on every boot, publishes this host's key to the known-hosts SSM
#       parameter as "<private ip>[,<public ip>] <key> <instance id>" (the public IP changes per start);
#     sumpipe-idle-shutdown.timer: powers the instance off (= stop) after IDLE_SHUTDOWN_MINUTES without a
#       running job, in case the stop_ec2 Lambda and its watchdog both missed it.
#
# AWS endpoint overrides in the boot environment (AWS_ENDPOINT_URL*, AWS_EC2_METADATA_SERVICE_ENDPOINT:
# none on EC2; private endpoints, or an emulator) are handed on to the runner and the boot helpers.
set -euo pipefail
: "${SUMPIPE_REGION:?}" "${ARTIFACTS_BUCKET:?}" "${ARTIFACTS_BUCKET_OWNER:?}" "${WHEEL_KEY:?}" "${WHEELHOUSE_KEY:?}" "${WORKER_PYTHON:?}"
: "${KNOWN_HOSTS_PARAMETER:?}" "${SSH_PUBLIC_KEY:?}" "${IDLE_SHUTDOWN_MINUTES:?}" "${JOB_TABLE:?}"
: "${OUTPUT_BUCKET:?}" "${JOB_DEADLINE:?}"
exec >>/var/log/sumpipe-bootstrap.log 2>&1
echo "sumpipe bootstrap starting at $(date -u +%FT%TZ)"

PREFIX=/opt/sumpipe
VENV=$PREFIX/venv
APP=$PREFIX/app
BAKED_MARK=$VENV/.sumpipe-baked
aws_overrides=$(env | grep -E '^AWS_(ENDPOINT_URL(_[A-Z0-9_]+)?|EC2_METADATA_SERVICE_ENDPOINT)=' || true)

# fetch KEY FILE: an object of the artifacts bucket, with the instance role's credentials. Plain
# python3 and SigV4 by hand, because the bake runs before any AWS SDK is installed. The request names
# the bucket's expected owner (the stack's account): S3 refuses it if another account owns the bucket.
fetch() {
  python3 - "$SUMPIPE_REGION" "$ARTIFACTS_BUCKET" "$1" "$2" "$ARTIFACTS_BUCKET_OWNER" <<'PY'
import datetime, hashlib, hmac, json, os, shutil, sys, urllib.parse, urllib.request
region, bucket, key, target, owner = sys.argv[1:6]
metadata = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://169.254.169.254/").rstrip("/")
def get(url, method="GET", **headers):
    return urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers), timeout=10)
token = get(f"{metadata}/latest/api/token", "PUT", **{"X-aws-ec2-metadata-token-ttl-seconds": "300"}).read().decode()
role_url = f"{metadata}/latest/meta-data/iam/security-credentials/"
role = get(role_url, **{"X-aws-ec2-metadata-token": token}).read().decode().split()[0]
credentials = json.load(get(role_url + role, **{"X-aws-ec2-metadata-token": token}))
endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
if endpoint:  # path-style, as SDKs address a custom endpoint
    base, path = endpoint.rstrip("/"), f"/{bucket}/" + urllib.parse.quote(key, safe="/~")
else:
    base, path = f"https://{bucket}.s3.{region}.amazonaws.com", "/" + urllib.parse.quote(key, safe="/~")
stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
headers = {"host": urllib.parse.urlsplit(base).netloc, "x-amz-content-sha256": hashlib.sha256(b"").hexdigest(),
           "x-amz-date": stamp, "x-amz-security-token": credentials["Token"],
           "x-amz-expected-bucket-owner": owner}
signed = ";".join(sorted(headers))
canonical = "\n".join(["GET", path, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed,
                       headers["x-amz-content-sha256"]])
scope = f"{stamp[:8]}/{region}/s3/aws4_request"
to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
signing_key = ("AWS4" + credentials["SecretAccessKey"]).encode()
for part in (stamp[:8], region, "s3", "aws4_request"):
    signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={credentials['AccessKeyId']}/{scope}, "
                            f"SignedHeaders={signed}, Signature={signature}")
del headers["host"]  # urllib sends the same one itself
with get(base + path, **headers) as response, open(target, "wb") as out:
    shutil.copyfileobj(response, out)
PY
}

bake() {
  echo "baking: Python $WORKER_PYTHON, the project's dependencies from $WHEELHOUSE_KEY"
  local python=python$WORKER_PYTHON
  if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if command -v dnf >/dev/null 2>&1; then
      dnf install -y -q "$python" "$python-pip"
    elif command -v apt-get >/dev/null 2>&1; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq "$python" "$python-venv"
    else
      echo "unsupported distribution: neither dnf nor apt-get, and no $python with venv" >&2
      exit 1
    fi
  fi
  local wheelhouse
  wheelhouse=$(mktemp -d)
  fetch "$WHEELHOUSE_KEY" "$wheelhouse/wheelhouse.tar"
  tar -xf "$wheelhouse/wheelhouse.tar" -C "$wheelhouse"
  "$python" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check --no-index \
    --find-links "$wheelhouse" -r "$wheelhouse/requirements.txt"
  rm -rf "$wheelhouse"
  echo "$WHEELHOUSE_KEY" >"$BAKED_MARK"
}

if [ -e "$BAKED_MARK" ]; then
  echo "image already baked (from $(cat "$BAKED_MARK")): skipping the bake"
else
  bake
fi
if [ "${SUMPIPE_BAKE_ONLY:-}" = 1 ]; then
  echo "sumpipe bake done at $(date -u +%FT%TZ)"
  exit 0
fi

# --- configure: the project, the user, the runner's settings, SSH, the boot units
id sumpipe >/dev/null 2>&1 || useradd --create-home --shell /bin/bash sumpipe
install -d -m 0755 "$PREFIX" /etc/sumpipe
install -d -m 0750 -o sumpipe -g sumpipe /var/lib/sumpipe
# The project itself, beside the baked venv (which stays as baked: a code change needs no re-bake).
wheel_dir=$(mktemp -d)
fetch "$WHEEL_KEY" "$wheel_dir/${WHEEL_KEY##*/}"
rm -rf "$APP"
"$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check --no-index --no-deps \
  --target "$APP" "$wheel_dir"/*.whl
rm -rf "$wheel_dir"
# Warm the vectors once so the first job doesn't pay for the cache conversion.
runuser -u sumpipe -- env PYTHONPATH="$APP" "$VENV/bin/python" -c 'import glove; glove.load()' \
  || echo "glove warm-up failed; jobs will load lazily"

# --- the job runner's settings: what the template gives the functions, the runner reads from here
install -d -m 0750 -o sumpipe -g sumpipe /var/lib/sumpipe/runner-logs
# Jobs' work directories and the summarizer's temporary files: on the root volume, never in /tmp (a
# RAM disk of half the memory on Amazon Linux 2023, smaller than the 2 GiB an input may be).
install -d -m 0750 -o sumpipe -g sumpipe /var/lib/sumpipe/work
cat >/etc/sumpipe/runner.env <<ENV
AWS_DEFAULT_REGION=$SUMPIPE_REGION
SUMPIPE_JOB_TABLE=$JOB_TABLE
SUMPIPE_OUTPUT_BUCKET=$OUTPUT_BUCKET
SUMPIPE_JOB_DEADLINE_S=$JOB_DEADLINE
SUMPIPE_RUNNER_LOG_DIR=/var/lib/sumpipe/runner-logs
SUMPIPE_WORK_DIR=/var/lib/sumpipe/work
TMPDIR=/var/lib/sumpipe/work
SUMPIPE_SHUTDOWN_SCHEDULER=$PREFIX/schedule-shutdown
PYTHONPATH=$APP
AWS_METADATA_SERVICE_TIMEOUT=5
AWS_METADATA_SERVICE_NUM_ATTEMPTS=3
$aws_overrides
ENV
chmod 0644 /etc/sumpipe/runner.env
# The forced command (SSH) and the SSM transport's runner: the job runner with those settings.
cat >"$PREFIX/job-runner" <<'SH'
#!/bin/sh
set -a
. /etc/sumpipe/runner.env
set +a
exec /opt/sumpipe/venv/bin/python -m sumpipe.instance.runner "$@"
SH
chmod 0755 "$PREFIX/job-runner"

# --- SSH: the pipeline's key can run the job runner and nothing else
home=$(getent passwd sumpipe | cut -d: -f6)
install -d -m 0700 -o sumpipe -g sumpipe "$home/.ssh"
printf 'restrict,command="%s/job-runner" %s\n' "$PREFIX" "$SSH_PUBLIC_KEY" >"$home/.ssh/authorized_keys"
chown sumpipe:sumpipe "$home/.ssh/authorized_keys"
chmod 0600 "$home/.ssh/authorized_keys"

# --- settings for the boot-time helpers
cat >/etc/sumpipe/instance.env <<EOF
SUMPIPE_REGION=$SUMPIPE_REGION
KNOWN_HOSTS_PARAMETER=$KNOWN_HOSTS_PARAMETER
IDLE_SHUTDOWN_MINUTES=$IDLE_SHUTDOWN_MINUTES
JOB_DEADLINE=$JOB_DEADLINE
$aws_overrides
EOF

# --- host key publication, on every boot (the public IP changes at each start)
cat >"$PREFIX/publish-hostkey" <<'SH'
#!/bin/bash
set -euo pipefail
set -a
# shellcheck disable=SC1091
. /etc/sumpipe/instance.env
set +a
# The instance metadata service where botocore would look for it too (its variable, else EC2's address).
metadata=${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254/}
metadata=${metadata%/}
token=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$metadata/latest/api/token")
imds() { curl -sf -H "X-aws-ec2-metadata-token: $token" "$metadata/latest/meta-data/$1"; }
instance_id=$(imds instance-id)
hosts=$(imds local-ipv4)
if public_ip=$(imds public-ipv4); then hosts="$hosts,$public_ip"; fi
host_key=$(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)
exec /opt/sumpipe/venv/bin/python - "$SUMPIPE_REGION" "$KNOWN_HOSTS_PARAMETER" "$instance_id" \
  "$hosts $host_key $instance_id" <<'PY'
# Read-modify-write of a parameter shared by all workers: retry until our line survived a re-read.
import random, sys, time, boto3
region, name, instance_id, line = sys.argv[1:5]
ssm = boto3.client("ssm", region_name=region)
for _ in range(20):
    current = ssm.get_parameter(Name=name)["Parameter"]["Value"].splitlines()
    kept = [entry for entry in current if entry.strip() and not entry.startswith("#")
            and not entry.endswith(" " + instance_id)]
    ssm.put_parameter(Name=name, Value="\n".join([*kept, line]), Type="String", Overwrite=True)
    time.sleep(random.uniform(0.2, 1.0))
    if line in ssm.get_parameter(Name=name)["Parameter"]["Value"].splitlines():
        sys.exit(0)
sys.exit("could not publish the host key")
PY
SH

# --- idle shutdown: "shutdown -h" on EC2 means stop (the default instance-initiated shutdown behaviour)
cat >"$PREFIX/idle-shutdown" <<'SH'
#!/bin/bash
set -euo pipefail
# shellcheck disable=SC1091
. /etc/sumpipe/instance.env
marker=/var/lib/sumpipe/last-activity
[ -e "$marker" ] || touch "$marker"
# A job in flight is activity: a runner (however it was started: the venv script sumpipe-runner or
# python -m sumpipe.instance.runner) younger than the job deadline. An older one is past its hard limit (it
# gets killed then, see sumpipe.instance.runner.start) and must not keep the instance up.
for pid in $(pgrep -u sumpipe -f 'sumpipe(-|\.instance\.)runner' || true); do
  age=$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ')
  if [ -n "$age" ] && [ "$age" -lt $(( JOB_DEADLINE + 60 )) ]; then
    touch "$marker"
    exit 0
  fi
done
idle_s=$(( $(date +%s) - $(stat -c %Y "$marker") ))
if [ "$idle_s" -ge $(( IDLE_SHUTDOWN_MINUTES * 60 )) ]; then
  logger -t sumpipe "no job for ${idle_s}s: shutting down"
  shutdown -h now
fi
SH
chmod 0755 "$PREFIX/publish-hostkey" "$PREFIX/idle-shutdown"

# --- the job deadline backstop: at every job start the runner has the instance schedule its own
# power-off (= stop on EC2) for when that job can no longer be running: its deadline, the runner's
# kill grace (30 s, sumpipe.instance.runner.HARD_LIMIT_GRACE_S) and a minute to report. So a hung
# instance stops with no Lambda involved. A later job moves the time later; nothing moves it earlier
# (the idle shutdown and the pipeline's stop come first when all goes well). The runner may run this
# script, with no arguments, as root, and nothing else.
cat >"$PREFIX/schedule-shutdown" <<'SH'
#!/bin/bash
set -euo pipefail
# shellcheck disable=SC1091
. /etc/sumpipe/instance.env
minutes=$(( (JOB_DEADLINE + 30 + 60 + 59) / 60 ))
exec shutdown -h "+$minutes" "sumpipe: past the deadline of the last job started"
SH
chmod 0755 "$PREFIX/schedule-shutdown"
install -d -m 0750 /etc/sudoers.d
printf 'sumpipe ALL=(root) NOPASSWD: %s/schedule-shutdown\n' "$PREFIX" >/etc/sudoers.d/sumpipe-schedule-shutdown
chmod 0440 /etc/sudoers.d/sumpipe-schedule-shutdown

cat >/etc/systemd/system/sumpipe-publish-hostkey.service <<'UNIT'
[Unit]
Description=Publish this worker's SSH host key to the sumpipe known-hosts parameter
Wants=network-online.target
After=network-online.target sshd.service ssh.service

[Service]
Type=oneshot
ExecStart=/opt/sumpipe/publish-hostkey
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT

cat >/etc/systemd/system/sumpipe-idle-shutdown.service <<'UNIT'
[Unit]
Description=Stop this worker when no sumpipe job has run for a while

[Service]
Type=oneshot
ExecStartPre=/bin/sh -c 'test -e /var/lib/sumpipe/last-activity || touch /var/lib/sumpipe/last-activity'
ExecStart=/opt/sumpipe/idle-shutdown
UNIT

cat >/etc/systemd/system/sumpipe-idle-shutdown.timer <<'UNIT'
[Unit]
Description=Check every minute whether the sumpipe worker is idle

[Timer]
OnBootSec=2min
OnUnitActiveSec=1min

[Install]
WantedBy=timers.target
UNIT

# A fresh boot counts as activity, so a just-started instance is not stopped before its job arrives.
cat >/etc/systemd/system/sumpipe-boot-activity.service <<'UNIT'
[Unit]
Description=Mark boot as sumpipe worker activity

[Service]
Type=oneshot
ExecStart=/usr/bin/touch /var/lib/sumpipe/last-activity

[Install]
WantedBy=multi-user.target
UNIT

systemctl daemon-reload
systemctl enable --now sumpipe-boot-activity.service sumpipe-publish-hostkey.service sumpipe-idle-shutdown.timer
echo "sumpipe bootstrap done at $(date -u +%FT%TZ)"
