"""The embedded local stack: moto, the template deployed into it, real sshd worker hosts, and the
Lambda runtime, run by one daemon process.

    up(config)    starts the daemon (or runs it in the foreground) and returns once it is ready
    up_emulator(config)  starts a daemon running only the emulator; returns the parameters a
                  deployment into it needs (`sumpipe deploy --param ...`)
    attach(dir, stack)  then runs the hosts and the Lambda runtime for that deployed stack
    down(dir)     stops it; nothing is left behind (process, namespace, veth, bridge)

State lives in the stack directory (default `.sumpipe/local/`):
  env            AWS_ENDPOINT_URL etc. + SUMPIPE_STACK_NAME: what a client needs (the CLI reads it)
  parameters.json  the template parameters a deployment into this emulator needs
  emulator-ready written once the emulator is up (before the stack is deployed or attached)
  attach         a request to attach to a stack deployed by `sumpipe deploy` (its name)
  outputs.json   the CloudFormation stack outputs
  stack.pid      the daemon; moto.pid its emulator; stack.log / moto.log their logs
  lambda/        the pid of each of the functions' execution environments (sumpipe.local.runtime)
  api-code/      the API function's zip, unpacked: what its environments run (sumpipe/local/http_api.py)
  hosts-dir      where the worker hosts' files are (each host's private root, user data, logs)
  ready          written once everything is up; holds the timings of the start

The stack is deployed by `sumpipe.ops.deploy.deploy`, as in AWS (sumpipe/local/resources.py adds only
the emulator's parameters and what moto drops). What AWS does and the emulator doesn't is done here,
and only here: each host boots from its instance's user data on the cached worker image, with an
instance metadata service of its own (start_hosts); the instances' states are mirrored onto the
hosts; the Lambda runtime delivers events. Handlers and the bootstrap run unchanged.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from sumpipe.local import emulator_probe, motoserver
from sumpipe.local.hosts import pid_alive, read_pid

DEFAULT_DIR = Path(".sumpipe/local")
RUNNER = Path(sys.prefix) / "bin" / "sumpipe-runner"
REPO_ROOT = Path(__file__).resolve().parents[2]
# The functions' execution environments write their pids here (one file each).
LAMBDA_PIDS = "lambda"
LOCAL_START_LEASE_S = 30


class StackError(RuntimeError):
    pass


@dataclass
class StackConfig:
    state_dir: Path = DEFAULT_DIR
    stack_name: str = "sumpipe"
    # Where the worker hosts live: "namespaces" (one network namespace each; needs root and
    # `ip netns`), "loopback" (sshd at loopback addresses; no root needed), or "auto" (namespaces
    # when available, else loopback). _prepare() resolves "auto" and the default subnet.
    hosts: str = "auto"
    # Names of the bridge/namespaces/veths/host directories start with the prefix; the subnet must be
    # free (loopback: inside 127.0.0.0/8). Empty: the mode's default (10.200.0.0/16, 127.77.0.0/16).
    prefix: str = "sp"
    subnet: str = ""
    workers: int = 1
    # SUMPIPE_* settings for the functions on top of the template's (e.g. a short deadline in tests).
    settings: dict[str, str] = field(default_factory=dict)
    watchdog_interval_s: float = 2.0
    retry_delay_s: int = 1
    # False: start only the emulator, then wait for attach() to a stack deployed by someone else.
    deploy: bool = True
    # The emulator checks every request against its caller's IAM policies once the stack is deployed
    # (functions and instances use their roles' credentials, operators an administrator's). False
    # only for debugging: the rehearsal of AWS is then friendlier than AWS.
    iam: bool = True
    # The realtime API deployed too (ApiAuth=jwt with the stack's own reviewer pool) and served by
    # the local HTTP API front (sumpipe/local/http_api.py) at outputs.json's ApiUrl.
    api: bool = True

    def to_json(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "state_dir": str(self.state_dir)})

    @classmethod
    def from_json(cls, text: str) -> StackConfig:
        values = json.loads(text)
        return cls(**{**values, "state_dir": Path(values["state_dir"])})


@dataclass(frozen=True)
class StackInfo:
    state_dir: Path
    env: dict[str, str]
    outputs: dict[str, str]
    timings: dict[str, float]
    hosts: str  # "namespaces" or "loopback"


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            env[name] = value
    return env


def info(state_dir: Path) -> StackInfo:
    ready = json.loads((state_dir / "ready").read_text())
    return StackInfo(
        state_dir=state_dir,
        env=read_env_file(state_dir / "env"),
        outputs=json.loads((state_dir / "outputs.json").read_text()),
        timings=ready["timings"],
        hosts=StackConfig.from_json((state_dir / "config.json").read_text()).hosts,
    )


def is_up(state_dir: Path) -> bool:
    pid = read_pid(state_dir / "stack.pid")
    return pid is not None and pid_alive(pid) and (state_dir / "ready").exists()


def resolve_hosts(config: StackConfig) -> StackConfig:
    """The config with its host mode and subnet decided; StackError naming what is missing."""
    from sumpipe.local.hosts import (
        DEFAULT_LOOPBACK_SUBNET,
        DEFAULT_SUBNET,
        SSHD,
        HostNetwork,
        namespaces_available,
    )

    if not Path(SSHD).exists():
        raise StackError(f"the worker hosts need OpenSSH's sshd: {SSHD} not found (install openssh-server)")
    mode = config.hosts
    if mode == "auto":
        mode = "namespaces" if namespaces_available() else "loopback"
    elif mode == "namespaces" and not namespaces_available():
        raise StackError("--hosts namespaces needs root and a working `ip netns`; use --hosts loopback")
    elif mode != "loopback":
        raise StackError(f"hosts must be auto, namespaces or loopback, not {mode!r}")
    subnet = config.subnet or (DEFAULT_SUBNET if mode == "namespaces" else DEFAULT_LOOPBACK_SUBNET)
    try:  # the network's own checks of prefix and subnet, before anything starts
        HostNetwork(
            config.state_dir, prefix=config.prefix, subnet=subnet, use_namespaces=mode == "namespaces"
        )
    except ValueError as error:
        raise StackError(str(error)) from None
    return dataclasses.replace(config, hosts=mode, subnet=subnet)


def _prepare(config: StackConfig) -> StackConfig:
    state_dir = config.state_dir.resolve()
    down(state_dir)  # whatever a crashed earlier run left behind
    state_dir.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(resolve_hosts(config), state_dir=state_dir)
    (state_dir / "config.json").write_text(config.to_json())
    return config


def run_foreground(config: StackConfig) -> None:
    """Runs the stack in this process until SIGTERM or Ctrl-C."""
    if is_up(config.state_dir.resolve()):
        raise StackError(f"a local stack is already running from {config.state_dir}")
    serve(_prepare(config))


def up(config: StackConfig, *, timeout_s: float = 900.0) -> StackInfo:
    """Starts the stack as a daemon unless it already runs; returns once it is ready (the first run
    also bakes the worker image: a minute or so, reported on stderr as it goes)."""
    if is_up(config.state_dir.resolve()):
        return info(config.state_dir.resolve())
    config = _prepare(dataclasses.replace(config, deploy=True))
    _wait_for(config.state_dir, "ready", _start_daemon(config), timeout_s)
    return info(config.state_dir)


def up_emulator(config: StackConfig, *, timeout_s: float = 60.0) -> dict[str, str]:
    """Starts a daemon running only the emulator (and the hosts' network); returns, once it is up, the
    template parameters a deployment into it needs. Then deploy a stack and attach() to it."""
    config = _prepare(dataclasses.replace(config, deploy=False))
    _wait_for(config.state_dir, "emulator-ready", _start_daemon(config), timeout_s)
    return emulator_parameters(config.state_dir)


def _start_daemon(config: StackConfig) -> Callable[[], bool]:
    """Starts the daemon for a prepared state directory; a check of whether it is still alive."""
    with (config.state_dir / "stack.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sumpipe.local.stack", "serve", str(config.state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    return lambda: process.poll() is None


def _wait_for(state_dir: Path, marker: str, daemon_alive: Callable[[], bool], timeout_s: float) -> None:
    """Until the daemon writes `marker`; StackError with its log (and everything torn down) if it dies."""
    deadline = time.monotonic() + timeout_s
    relayed = 0
    while not (state_dir / marker).exists():
        relayed = _relay_progress(state_dir / "stack.log", relayed)
        if not daemon_alive() or time.monotonic() > deadline:
            tail = (state_dir / "stack.log").read_text(errors="replace")[-3000:]
            failure = state_dir / "failed"  # one line from a daemon that could not go on (see main)
            reason = failure.read_text().strip() if failure.exists() else ""
            down(state_dir)
            if reason:
                raise StackError(reason)
            raise StackError(f"the local stack did not get ready (see {state_dir}/stack.log):\n{tail}")
        time.sleep(0.05)


def _relay_progress(log: Path, offset: int) -> int:
    """Print the daemon's progress lines (JSON with "progress") logged since `offset`; the new offset."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return offset
    complete = chunk[: chunk.rfind(b"\n") + 1]
    for line in complete.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "progress" in record:
                print(f"local stack: {record['progress']}", file=sys.stderr, flush=True)
    return offset + len(complete)


def emulator_parameters(state_dir: Path) -> dict[str, str]:
    """The template parameters a deployment into this emulator needs (pass them to `sumpipe deploy`)."""
    return dict(json.loads((state_dir.resolve() / "parameters.json").read_text()))


def attach(state_dir: Path, stack_name: str, *, timeout_s: float = 900.0) -> StackInfo:
    """Attach the hosts and the Lambda runtime of an emulator-only daemon to `stack_name`, a stack
    deployed into it with its emulator_parameters; returns once ready."""
    state_dir = state_dir.resolve()
    if not (state_dir / "emulator-ready").exists():
        raise StackError(f"no emulator waits for a stack in {state_dir}: `sumpipe local up --emulator-only`")
    pid = read_pid(state_dir / "stack.pid")
    # Written whole, then renamed: the waiting daemon never reads a half-written name.
    (state_dir / "attach.tmp").write_text(stack_name)
    (state_dir / "attach.tmp").rename(state_dir / "attach")
    _wait_for(state_dir, "ready", lambda: pid is not None and pid_alive(pid), timeout_s)
    return info(state_dir)


def down(state_dir: Path = DEFAULT_DIR, timeout_s: float = 30.0) -> None:
    """Stops the daemon (which tears everything down), then removes anything a crash left."""
    from sumpipe.local.hosts import HostNetwork

    state_dir = state_dir.resolve()
    pid = read_pid(state_dir / "stack.pid")
    if pid is not None and pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    leftovers = [state_dir / "moto.pid", *sorted((state_dir / LAMBDA_PIDS).glob("*.pid"))]
    for pid_file in leftovers:  # a daemon killed outright leaves its children
        pid = read_pid(pid_file)
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
    config_path = state_dir / "config.json"
    hosts_dir = _hosts_dir(state_dir)
    if config_path.exists():
        config = StackConfig.from_json(config_path.read_text())
        HostNetwork(
            hosts_dir or state_dir / "hosts",
            prefix=config.prefix,
            subnet=config.subnet,
            use_namespaces=config.hosts == "namespaces",
        ).teardown()
    if hosts_dir is not None:
        shutil.rmtree(hosts_dir, ignore_errors=True)
    markers = ("stack.pid", "moto.pid", "ready", "emulator-ready", "attach", "parameters.json", "hosts-dir")
    for name in (*markers, "env", "failed"):
        (state_dir / name).unlink(missing_ok=True)


def _hosts_dir(state_dir: Path) -> Path | None:
    try:
        return Path((state_dir / "hosts-dir").read_text().strip())
    except FileNotFoundError:
        return None


def _make_hosts_dir(state_dir: Path, prefix: str) -> Path:
    """The hosts' files (sshd configs, authorized_keys, the runner's logs) live outside the state
    directory: sshd reads authorized_keys as the hosts' login user, so every directory above it
    must be searchable by that user, which a user's or pytest's private directory is not."""
    path = Path(tempfile.mkdtemp(prefix=f"sumpipe-{prefix}-"))
    path.chmod(0o755)
    for shared in ("runner-logs", "work"):  # the runner's logs, and its jobs' work directories
        (path / shared).mkdir(mode=0o1777)
        (path / shared).chmod(0o1777)
    (state_dir / "hosts-dir").write_text(str(path))
    return path


def function_settings(
    outputs: dict[str, str], overrides: dict[str, str], stack_name: str, *, ssh_user: str, ssh_port: int
) -> dict[str, str]:
    """The SUMPIPE_* environment the template gives the functions, from the stack outputs, with
    the hosts' login user and SSH port (the instance bootstrap's `sumpipe` and 22 in AWS)."""
    env = {
        "SUMPIPE_STACK_NAME": stack_name,
        "SUMPIPE_INPUT_BUCKET": outputs["InputBucketName"],
        "SUMPIPE_OUTPUT_BUCKET": outputs["OutputBucketName"],
        "SUMPIPE_JOB_TABLE": outputs["JobTableName"],
        "SUMPIPE_JOB_QUEUE_URL": outputs["JobQueueUrl"],
        "SUMPIPE_WORKER_TAG_KEY": outputs["WorkerTagKey"],
        "SUMPIPE_WORKER_TAG_VALUE": outputs["WorkerTagValue"],
        "SUMPIPE_SSH_KEY_SECRET_ID": outputs["SshKeySecretId"],
        "SUMPIPE_KNOWN_HOSTS_PARAMETER": outputs["KnownHostsParameterName"],
        # Local hosts are up within milliseconds; a long wait only hides a broken host.
        "SUMPIPE_INSTANCE_READY_TIMEOUT_S": "20",
        # Past that wait, as the template's 420 s is past the trigger's 360 s timeout.
        "SUMPIPE_START_LEASE_S": str(LOCAL_START_LEASE_S),
    }
    # Locally the hosts exist only at the private IPs; moto's public IPs must never be contacted.
    return {
        **env,
        **overrides,
        "SUMPIPE_WORKER_ADDRESS": "private",
        "SUMPIPE_SSH_USER": ssh_user,
        "SUMPIPE_SSH_PORT": str(ssh_port),
    }


def serve(config: StackConfig) -> None:
    """The daemon: bring everything up, write `ready`, run until SIGTERM, tear everything down."""
    from sumpipe.local.hosts import HostNetwork, Reconciler
    from sumpipe.local.resources import apply_dropped_resources, deploy_local_stack, emulator_parameters
    from sumpipe.local.runtime import EventSource, Runtime
    from sumpipe.ops import deploy

    front: Any = None

    state_dir = config.state_dir
    (state_dir / "stack.pid").write_text(str(os.getpid()))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    hosts_dir = _make_hosts_dir(state_dir, config.prefix)
    network = HostNetwork(
        hosts_dir, prefix=config.prefix, subnet=config.subnet, use_namespaces=config.hosts == "namespaces"
    )
    moto: subprocess.Popen[bytes] | None = None
    metadata_services: list[Any] = []
    reconciler: Reconciler | None = None
    runtime: Runtime | None = None
    try:
        network.create()
        port = motoserver.free_port()
        binds = list(dict.fromkeys(["127.0.0.1", network.gateway_ip]))  # loopback hosts: one address
        moto = motoserver.start(port, binds, state_dir / "moto.log")
        (state_dir / "moto.pid").write_text(str(moto.pid))
        endpoint = f"http://127.0.0.1:{port}"
        administrator = motoserver.create_administrator(endpoint)
        client_env = {**motoserver.endpoint_environment(endpoint), **administrator}
        # This process and the CLI act as the administrator; no other credential source is consulted
        # (a stray profile or session token, or an instance metadata lookup off this machine).
        for name in motoserver.OTHER_IDENTITY_VARIABLES:
            os.environ.pop(name, None)
        os.environ.update({**client_env, "AWS_EC2_METADATA_DISABLED": "true"})
        timings["moto_s"] = time.monotonic() - t0

        session = boto3.session.Session()
        stack_name = config.stack_name
        # The API front's address is the function's SUMPIPE_PUBLIC_URL, so it is chosen before deploying.
        api_url = f"http://127.0.0.1:{motoserver.free_port()}" if config.api else None
        if config.deploy:
            # A deadline set for the functions is the instances' too (their runners' hard limit).
            deadline = config.settings.get("SUMPIPE_JOB_DEADLINE_S")
            outputs = deploy_local_stack(
                session, stack_name, network_cidr=config.subnet, workers=config.workers,
                overrides={"JobDeadlineSeconds": deadline} if deadline else None, api_url=api_url,
            )  # fmt: skip
        else:
            parameters = emulator_parameters(session.client("ec2"), config.subnet, config.workers)
            (state_dir / "parameters.json").write_text(json.dumps(parameters, indent=2))
            _write_env(state_dir, client_env, stack_name)
            _write_marker(state_dir / "emulator-ready", timings)
            print(json.dumps({"message": "emulator ready, waiting for a stack to attach"}), flush=True)
            stack_name = _wait_for_attach_request(state_dir, stopping)
            if stack_name is None:
                return
            api_outputs = apply_dropped_resources(
                session, stack_name, deploy.render_template(), api_url=api_url
            )
            outputs = {**deploy.stack_outputs(session.client("cloudformation"), stack_name), **api_outputs}
        (state_dir / "outputs.json").write_text(json.dumps(outputs, indent=2))
        timings["deploy_s"] = time.monotonic() - t0 - timings["moto_s"]

        settings_env = function_settings(
            outputs, config.settings, stack_name, ssh_user=network.login_user, ssh_port=network.ssh_port
        )
        os.environ.update(settings_env)
        # Every role's credentials are made before enforcement: the emulator would refuse any
        # principal but the AWS service named in a role's trust policy.
        function_names = {
            "trigger": outputs["TriggerFunctionName"],
            "worker": outputs["WorkerFunctionName"],
            "stop_ec2": outputs["StopFunctionName"],
        }
        function_credentials = {
            handler: function_role_credentials(session, name) for handler, name in function_names.items()
        }
        instance_ids = [i for i in outputs["WorkerInstanceIds"].split(",") if i]
        instance_roles = {i: instance_role_credentials(session, i) for i in instance_ids}
        if api_url is not None and "HttpApiId" in outputs:
            api_credentials = function_role_credentials(session, outputs["ApiFunctionName"])
            front = api_front(
                session, state_dir, stack_name, outputs, api_credentials, api_url, endpoint, config.settings
            )
        if config.iam:
            motoserver.enforce_iam(endpoint)
            # Before anything relies on it: the emulator authorizes S3 as AWS does (moto 5.2.6 didn't).
            emulator_probe.check_s3_authorization(endpoint, administrator)
        hosts, metadata_services = start_hosts(
            session, network, stack_name, outputs, port, settings_env, instance_roles
        )
        reconciler = Reconciler(session.client("ec2"), hosts, interval=0.05)
        reconciler.start()

        account = session.client("sts").get_caller_identity()["Account"]

        def source(handler: str, queue_output: str, batch_size: int, concurrency: int) -> EventSource:
            return EventSource(
                handler, function_names[handler], outputs[queue_output], batch_size, concurrency,
                credentials=function_credentials[handler],
            )  # fmt: skip

        runtime = Runtime(
            [
                source("trigger", "InputEventsQueueUrl", 10, 2),
                source("worker", "JobQueueUrl", 1, 3),
                source("stop_ec2", "OutputEventsQueueUrl", 10, 2),
            ],
            watchdog_function=outputs["StopFunctionName"],
            watchdog_credentials=function_credentials["stop_ec2"],
            watchdog_interval_s=config.watchdog_interval_s,
            account=account,
            region=motoserver.REGION,
            pid_dir=state_dir / LAMBDA_PIDS,
            retry_delay_s=config.retry_delay_s,
            # A dead environment's batch comes back past the start lease, as AWS's visibility
            # timeouts (6x the function's timeout) do: its trigger's job is then resumed.
            crash_redelivery_s=int(float(settings_env["SUMPIPE_START_LEASE_S"])) + 5,
        )
        runtime.start()
        if front is not None:
            front.start()
            outputs["ApiUrl"] = front.url
            (state_dir / "outputs.json").write_text(json.dumps(outputs, indent=2))
        _write_env(state_dir, client_env, stack_name)
        timings["total_s"] = time.monotonic() - t0
        _write_marker(state_dir / "ready", timings)
        ready = {"message": "local stack ready", "hosts": config.hosts, "iam": config.iam, "timings": timings}
        print(json.dumps(ready), flush=True)
        stopping.wait()
    finally:
        (state_dir / "ready").unlink(missing_ok=True)
        if front is not None:
            front.stop()
        if runtime is not None:
            runtime.stop()
        if reconciler is not None:
            reconciler.stop()
        network.teardown()
        for service in metadata_services:
            service.stop()
        if moto is not None:
            moto.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                moto.wait(5)
            moto.kill()
        (state_dir / "moto.pid").unlink(missing_ok=True)
        shutil.rmtree(hosts_dir, ignore_errors=True)
        (state_dir / "hosts-dir").unlink(missing_ok=True)
        (state_dir / "stack.pid").unlink(missing_ok=True)


def api_front(
    session: Any,
    state_dir: Path,
    stack_name: str,
    outputs: dict[str, str],
    credentials: RoleCredentials,
    api_url: str,
    endpoint: str,
    settings: dict[str, str],
) -> Any:
    """The local HTTP API front (sumpipe/local/http_api.py) for `api_url`, serving the stack's API as
    the emulator holds it, in front of the API function run from the zip the stack was deployed with
    (its ApiCodeKey in the artifacts bucket), with its role's credentials; not started yet.

    Made before IAM is enforced: with enforcement on, moto refuses every signed GET of its REST-JSON
    services (Lambda, API Gateway v2) with SignatureDoesNotMatch, the administrator's included, so
    the API's routes and the function's configuration are read while the emulator still answers."""
    import zipfile
    from urllib.parse import urlsplit

    from sumpipe.local import http_api, jwt_authorizer

    stack = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])}
    code_dir = state_dir / "api-code"
    shutil.rmtree(code_dir, ignore_errors=True)
    code_dir.mkdir(parents=True)
    archive = state_dir / "api-code.zip"
    session.client("s3").download_file(parameters["ArtifactsBucket"], parameters["ApiCodeKey"], str(archive))
    with zipfile.ZipFile(archive) as unpacked:
        unpacked.extractall(code_dir)
    archive.unlink()
    function_name = outputs["ApiFunctionName"]
    pool, timeout_s = http_api.function_pool(
        session,
        function_name,
        code_dir,
        credentials,
        state_dir / LAMBDA_PIDS,
        endpoint=endpoint,
        region=motoserver.REGION,
        overrides={
            **settings,
            # The GloVe layer's /opt/glove is, here, the vectors' local cache directory (None: unset,
            # and the function loads the default vectors itself, as `sumpipe serve` does).
            "SUMPIPE_GLOVE": http_api.local_glove_dir(),
            # The page signs reviewers in against the emulator's Cognito, not cognito-idp.amazonaws.com.
            "SUMPIPE_AUTH_ENDPOINT": endpoint,
        },
    )
    api = http_api.load_api(session, outputs["HttpApiId"])
    front = http_api.HttpApiFront(
        api,
        {function_name: pool},
        jwt_authorizer.KeyCache(endpoint),
        function_timeouts_s={function_name: timeout_s},
        port=urlsplit(api_url).port or 0,
    )
    return front


def _write_marker(path: Path, timings: dict[str, float]) -> None:
    """Written to a temporary name and renamed: a waiting client never reads a half-written file."""
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps({"timings": timings}))
    staging.rename(path)


def _write_env(state_dir: Path, client_env: dict[str, str], stack_name: str) -> None:
    lines = [f"{k}={v}" for k, v in {**client_env, "SUMPIPE_STACK_NAME": stack_name}.items()]
    (state_dir / "env").write_text(
        "# written by `sumpipe local up`; read by the sumpipe CLI\n" + "\n".join(lines) + "\n"
    )


def _wait_for_attach_request(state_dir: Path, stopping: threading.Event) -> str | None:
    """The stack name attach() asks for, or None when the daemon is stopped first."""
    request = state_dir / "attach"
    while not stopping.wait(0.1):
        if request.exists():
            return request.read_text().strip()
    return None


def _runs_as(user: str, argv: list[str], env: dict[str, str] | None = None) -> bool:
    done = subprocess.run(
        ["runuser", "-u", user, "--", "env", *[f"{k}={v}" for k, v in (env or {}).items()], *argv],
        capture_output=True,
        timeout=60,
    )
    return done.returncode == 0


def runner_command(user: str) -> tuple[str, dict[str, str]]:
    """The forced command that runs `sumpipe-runner` as the hosts' login user, and the environment
    it needs. Normally the venv's own script. When the venv's interpreter is out of that user's
    reach (a pyenv build under /root, mode 700), the same-version system interpreter runs the
    project from the venv's site-packages instead: the runner must never run as root.
    When the login user is ourselves (loopback hosts without root), our own interpreter and
    import path run it."""
    if user == pwd.getpwuid(os.geteuid()).pw_name:
        if RUNNER.exists():
            return str(RUNNER), {}
        path = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
        return f"{sys.executable} -m sumpipe.instance.runner", path
    if _runs_as(user, [sys.executable, "-c", "0"]):
        return str(RUNNER), {}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = Path(sys.prefix) / "lib" / version / "site-packages"
    env = {"PYTHONPATH": f"{REPO_ROOT}:{site_packages}"}
    for candidate in (Path("/usr/bin") / version, Path("/usr/local/bin") / version):
        if not candidate.exists():
            continue
        if _runs_as(user, [str(candidate), "-c", "import sumpipe.instance.runner"], env):
            return f"{candidate} -m sumpipe.instance.runner", env
    raise StackError(
        f"user {user} can't run {sys.executable} (is it under a private home?) and no system {version} "
        "can run the project instead; make the venv's interpreter readable by that user"
    )


@dataclass(frozen=True)
class RoleCredentials:
    role_name: str
    credentials: dict[str, str]  # AccessKeyId, SecretAccessKey, SessionToken (sts:AssumeRole's)

    def session(self) -> boto3.session.Session:
        """A session holding these credentials (one per thread: sessions are not thread-safe)."""
        return boto3.session.Session(
            aws_access_key_id=self.credentials["AccessKeyId"],
            aws_secret_access_key=self.credentials["SecretAccessKey"],
            aws_session_token=self.credentials["SessionToken"],
            region_name=motoserver.REGION,
        )


def _assume(session: Any, role_arn: str, session_name: str) -> RoleCredentials:
    assumed = session.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=session_name)
    keys = ("AccessKeyId", "SecretAccessKey", "SessionToken")
    return RoleCredentials(role_arn.rsplit("/", 1)[-1], {k: assumed["Credentials"][k] for k in keys})


def function_role_credentials(session: Any, function_name: str) -> RoleCredentials:
    """What Lambda gives a function: credentials of the role in its configuration."""
    role_arn = session.client("lambda").get_function(FunctionName=function_name)["Configuration"]["Role"]
    return _assume(session, role_arn, function_name)


def instance_role_credentials(session: Any, instance_id: str) -> RoleCredentials:
    """What EC2 gives an instance: credentials of the role in its instance profile."""
    described = session.client("ec2").describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [instance_id]}]
    )["IamInstanceProfileAssociations"]
    if not described:
        raise StackError(f"instance {instance_id} has no instance profile")
    profile_name = described[0]["IamInstanceProfile"]["Arn"].rsplit("/", 1)[-1]
    profile = session.client("iam").get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]
    roles = profile["Roles"]
    if not roles:
        raise StackError(f"instance profile {profile_name} of {instance_id} has no role")
    return _assume(session, roles[0]["Arn"], instance_id)


def start_hosts(
    session: Any,
    network: Any,
    stack_name: str,
    outputs: dict[str, str],
    port: int,
    settings_env: dict[str, str],
    instance_roles: dict[str, RoleCredentials],
) -> tuple[dict[str, Any], list[Any]]:
    """One host per worker instance, at the instance's private IP, each with an instance metadata
    service of its own serving the instance role's credentials (botocore's default chain finds them).

    With namespaces, each host boots as its EC2 instance boots (InstanceHost): from the instance's own
    user data, deploy/bootstrap.sh, on the worker image (baked here once, then cached). Every host
    boots once now, as EC2 boots a new instance, and must come up with its host key published.
    Loopback hosts (no root: no mount namespaces) are set up from here as the bootstrap would set them
    up: a rehearsal of the event wiring and IAM, not of the boot scripts.
    Leaves the instances stopped (they start on demand). The hosts, and their metadata services."""
    from sumpipe.local.imds import InstanceMetadataService

    ec2 = session.client("ec2")
    stack = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])}
    if parameters.get("EventSourcesEnabled") != "false":
        raise StackError(
            f"{stack_name}: deployed with EventSourcesEnabled={parameters.get('EventSourcesEnabled')}; "
            "deploy it with the emulator's parameters (`sumpipe local status` prints them)"
        )
    instance_ids = [i for i in outputs["WorkerInstanceIds"].split(",") if i]
    described = ec2.describe_instances(InstanceIds=instance_ids)
    private_ips = {
        i["InstanceId"]: i.get("PrivateIpAddress") for r in described["Reservations"] for i in r["Instances"]
    }
    metadata = {}  # instance id -> its metadata service
    # The template pins instance i (in output order) at the i-th worker IP, which is host i's.
    for index, instance_id in enumerate(instance_ids):
        ip = network.host_ip(index)
        if private_ips[instance_id] != ip:
            # Never connect to an address the emulator invented: only to hosts we created.
            raise StackError(f"instance {instance_id} is at {private_ips[instance_id]}, not at its host {ip}")
        role = instance_roles[instance_id]
        metadata[instance_id] = InstanceMetadataService(
            network.gateway_ip,
            instance_id=instance_id,
            private_ip=ip,
            region=motoserver.REGION,
            role_name=role.role_name,
            credentials=role.credentials,
            allowed_client=ip if network.use_namespaces else None,
        )
        metadata[instance_id].start()
    emulator = f"http://{network.gateway_ip}:{port}"
    known_hosts_parameter = outputs["KnownHostsParameterName"]
    if network.use_namespaces:
        hosts = _boot_instance_hosts(session, network, parameters, known_hosts_parameter, metadata, emulator)
    else:
        hosts = _loopback_hosts(
            session, network, parameters, known_hosts_parameter, metadata, emulator, settings_env
        )
    ec2.stop_instances(InstanceIds=instance_ids)
    for host in hosts.values():
        host.stop()
    return hosts, list(metadata.values())


# A first boot runs the whole user data but the bake: the project's install and the vectors' warm-up.
FIRST_BOOT_TIMEOUT_S = 300.0


def _boot_instance_hosts(
    session: Any,
    network: Any,
    parameters: dict[str, str],
    known_hosts_parameter: str,
    metadata: dict[str, Any],
    emulator: str,
) -> dict[str, Any]:
    """Hosts booted from their instances' user data (see start_hosts), each booted once."""
    from sumpipe.flow import remote
    from sumpipe.local import image

    ec2 = session.client("ec2")
    image_dir = image.image_path(parameters["WorkerPython"])
    hosts = {}
    for instance_id, service in metadata.items():
        # The machine's AWS endpoints: the emulator, and this host's metadata service.
        endpoints = {"AWS_ENDPOINT_URL": emulator, "AWS_EC2_METADATA_SERVICE_ENDPOINT": service.endpoint}
        user_data = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        hosts[instance_id] = network.add_instance_host(
            user_data=base64.b64decode(user_data["UserData"]["Value"]),
            image=image_dir,
            environment=endpoints,
        )
    image.ensure_baked(image_dir, next(iter(hosts.values())), _progress)
    for host in hosts.values():
        host.start()
    deadline = time.monotonic() + FIRST_BOOT_TIMEOUT_S
    while not all(host.booted for host in hosts.values()):
        if time.monotonic() > deadline or not all(host.running for host in hosts.values()):
            raise StackError(f"the worker hosts did not boot in {FIRST_BOOT_TIMEOUT_S:.0f} s")
        time.sleep(0.05)
    known_hosts = session.client("ssm").get_parameter(Name=known_hosts_parameter)
    for instance_id, host in hosts.items():
        if host.user_data_status != 0:
            problem = f"its user data (deploy/bootstrap.sh) exited with status {host.user_data_status}"
        elif not remote.has_published_key(known_hosts["Parameter"]["Value"], host.ip, 22, instance_id):
            problem = "it booted without publishing its host key"
        else:
            continue
        raise StackError(
            f"worker instance {instance_id}: {problem}; the end of its "
            f"/var/log/sumpipe-bootstrap.log:\n{host.bootstrap_log()}"
        )
    return hosts


def _progress(message: str) -> None:
    """A line `sumpipe local up` relays to its user while it waits (see _relay_progress)."""
    print(json.dumps({"progress": message}), flush=True)


def _loopback_hosts(
    session: Any,
    network: Any,
    parameters: dict[str, str],
    known_hosts_parameter: str,
    metadata: dict[str, Any],
    emulator: str,
    settings_env: dict[str, str],
) -> dict[str, Any]:
    """Loopback hosts, set up as deploy/bootstrap.sh sets up an instance: the stack's SshPublicKey may
    run only the job runner, with the runner's settings, and the host keys are published."""
    from sumpipe.local.hosts import SSH_USER, ensure_ssh_user

    if network.login_user == SSH_USER:
        ensure_ssh_user()
    forced_command, runner_env = runner_command(network.login_user)
    host_env = {
        **runner_env,
        **motoserver.endpoint_environment(emulator),
        "SUMPIPE_OUTPUT_BUCKET": settings_env["SUMPIPE_OUTPUT_BUCKET"],
        "SUMPIPE_JOB_TABLE": settings_env["SUMPIPE_JOB_TABLE"],
        **{k: v for k, v in settings_env.items() if k == "SUMPIPE_JOB_DEADLINE_S"},
        "SUMPIPE_RUNNER_LOG_DIR": str(network.state_dir / "runner-logs"),
        "SUMPIPE_WORK_DIR": str(network.state_dir / "work"),
        # As the bootstrap's runner.env: botocore asks the metadata service once, with a 1 s timeout,
        # by default, too little for a runner starting beside ten others on a busy instance.
        "AWS_METADATA_SERVICE_TIMEOUT": "5",
        "AWS_METADATA_SERVICE_NUM_ATTEMPTS": "3",
    }
    hosts = {}
    for instance_id, service in metadata.items():
        environment = {**host_env, "AWS_EC2_METADATA_SERVICE_ENDPOINT": service.endpoint}
        hosts[instance_id] = network.add_host(
            authorized_key=parameters["SshPublicKey"], forced_command=forced_command, environment=environment
        )
    session.client("ssm").put_parameter(
        Name=known_hosts_parameter,
        # As deploy/bootstrap.sh publishes it: known_hosts line, then the instance id.
        Value="\n".join(f"{h.known_hosts_line()} {i}" for i, h in hosts.items()) + "\n",
        Type="String",
        Overwrite=True,
    )
    return hosts


def main() -> None:
    parser = argparse.ArgumentParser(description="the local stack daemon (use `sumpipe local up`)")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("state_dir", type=Path)
    args = parser.parse_args()
    try:
        serve(StackConfig.from_json((args.state_dir / "config.json").read_text()))
    except motoserver.EmulatorError as error:
        # The emulator can't stand in for AWS: `local up` reports this one line (see _wait_for).
        (args.state_dir / "failed").write_text(f"{error}\n")
        raise SystemExit(f"local stack: {error}") from None


if __name__ == "__main__":
    main()
