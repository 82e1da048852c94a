"""One typed settings object for every part of the pipeline, read from the environment once.

Lambdas get these variables from the CloudFormation template; the local stack and the
`sumpipe` CLI build the same object from the stack's outputs. boto3 itself picks up the
endpoint (AWS_ENDPOINT_URL), region and credentials from its own standard variables, so
nothing here knows whether it talks to AWS or to the emulator.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SUMPIPE_", frozen=True, extra="ignore")

    stack_name: str = "sumpipe"
    input_bucket: str = ""
    output_bucket: str = ""
    job_table: str = ""
    # The trigger hands a job to the worker Lambda through this queue (an SQS event source).
    job_queue_url: str = ""

    worker_tag_key: str = "sumpipe:role"
    worker_tag_value: str = "worker"

    transport: Literal["ssh", "ssm"] = "ssh"
    ssh_user: str = "sumpipe"
    ssh_port: int = 22
    # Secrets Manager secret id holding the worker's private key (PEM / OpenSSH format).
    ssh_key_secret_id: str = ""
    # SSM parameter holding known_hosts lines for the worker instances (published at boot).
    known_hosts_parameter: str = ""
    # Which address of an instance the worker Lambda connects to: "private" (Lambdas in the VPC,
    # and the local stack, whose hosts live at the private IPs) or "public" (Lambdas outside it).
    worker_address: Literal["private", "public"] = "private"
    connect_timeout_s: float = 5.0
    connect_attempts: int = 4
    # All of the trigger's wait for an instance (start, boot, SSH, host key): shorter than the
    # trigger function's timeout (360 s), with margin, so the trigger never dies mid-wait.
    instance_ready_timeout_s: float = 300.0
    # A job its trigger left `starting` this long (the trigger died after assigning it) is taken
    # over by the event's redelivery: longer than the trigger's timeout, so never a live trigger's.
    start_lease_s: float = 420.0

    # A job still running after this long is failed and its instance stopped by the watchdog.
    job_deadline_s: int = 3600
    # The watchdog stops a worker instance left running with no job in flight for this long.
    idle_grace_s: int = 600
    # On a worker instance: the root-run program (deploy/bootstrap.sh's schedule-shutdown, allowed to
    # the runner through sudo) that schedules the instance's own power-off past a starting job's
    # deadline. Empty: not on a worker instance, nothing scheduled.
    shutdown_scheduler: str = ""
    # On a worker instance: where a job's files (its summary, and the summarizer's temporary files,
    # such as a Parquet input's spool) are made: on the instance's disk (deploy/bootstrap.sh gives
    # /var/lib/sumpipe/work), since /tmp is a RAM disk of half the memory on Amazon Linux 2023 and
    # an input may be 2 GiB. Empty: the system's temporary directory.
    work_dir: str = ""
    summarizer_method: Literal["default", "kmeans"] = "default"
    # Inputs larger than this are refused by the trigger (error.json says the size and the limit)
    # before any instance starts: the worker's disk and the job's deadline are finite.
    max_input_bytes: int = 2 * 1024**3
    log_level: str = "INFO"
    # Where the page's reviewers' decisions go: the stack's DynamoDB table when deployed, else this
    # SQLite file (`sumpipe serve`; relative to its working directory).
    feedback_table: str = ""
    feedback_db: str = ".sumpipe/feedback.sqlite3"
    # The feedback store's quotas (sumpipe/feedback/quota.py), so one client can't grow it without
    # bound. A decision's text fields in UTF-8 bytes: a 100,000-character text with its summary
    # fits, and every decision stays under DynamoDB's 400 KB item limit.
    feedback_max_decision_bytes: int = 300_000
    # Decisions one reviewer (the name the page sends; unnamed ones share a quota) may record in a
    # minute (UTC): a reviewer clicking through a job's rows makes a few.
    feedback_decisions_per_minute: int = 60
    # Where browsers reach the review page (the API's own address). Redirects are built from it,
    # never from a request's Host header, and its origin may send the page's state-changing requests
    # (POST /feedback, /uploads). `sumpipe serve` sets it from --host/--port; the template, to the
    # HTTP API's URL.
    public_url: str = "http://127.0.0.1:8080/"
    # Other origins whose pages may POST to the API (JSON lists: '["https://review.example.com"]').
    allowed_origins: tuple[str, ...] = ()
    # Host header values the server answers besides public_url's host (and, when that is a loopback
    # name, the other loopback names): a request for any other host is a DNS-rebinding attempt.
    allowed_hosts: tuple[str, ...] = ()
    # GET /docs (Swagger UI from the package's files). Off in the Lambda, whose layer lacks them.
    api_docs: bool = True
    # Who signs the page's reviewers in, when the deployed API takes a JWT (the template sets both
    # from its Cognito user pool): the tokens' issuer and the app client the page signs in with.
    # Empty (IAM auth, `sumpipe serve`): the page has no sign-in and sends no tokens.
    auth_issuer: str = ""
    auth_client_id: str = ""
    # Where the page sends Cognito's InitiateAuth, RespondToAuthChallenge and GlobalSignOut. Empty:
    # derived from a Cognito issuer (https://cognito-idp.<region>.amazonaws.com/), which is right on
    # AWS; the local stack's emulator serves Cognito at its own address, so it is set there.
    auth_endpoint: str = ""


# Settings only a worker instance has (its runner.env, from deploy/bootstrap.sh); the functions'
# environment in the template holds every other one.
INSTANCE_SETTINGS = frozenset({"shutdown_scheduler", "work_dir"})
# Settings only the API (its function, or `sumpipe serve`) uses: where the review page's decisions
# go, whom it answers, and who signs its reviewers in.
API_SETTINGS = frozenset(
    {
        "feedback_table",
        "feedback_db",
        "feedback_max_decision_bytes",
        "feedback_decisions_per_minute",
        "public_url",
        "allowed_origins",
        "allowed_hosts",
        "api_docs",
        "auth_issuer",
        "auth_client_id",
        "auth_endpoint",
    }
)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use (not at import)."""
    return Settings()
