"""The instance metadata service of one local worker host: what 169.254.169.254 is to an EC2 instance.

An instance's processes get their AWS credentials from its instance profile through this service,
with botocore's unmodified default credential chain (pointed here by AWS_EC2_METADATA_SERVICE_ENDPOINT,
which botocore honours), and the boot scripts read the instance id and addresses from it. IMDSv2 only,
as the template requires (`HttpTokens: required`): a session token from `PUT /latest/api/token`
must accompany every read.

The credentials are the instance role's, from sts:AssumeRole, made by the stack before it turns IAM
enforcement on (the emulator would refuse the assume-role call of any principal but EC2's service).
When the host lives in a network namespace, only that host's address may ask.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 (a header name)
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"  # noqa: S105


class InstanceMetadataService:
    """Serves one instance's metadata on `bind_ip` (an ephemeral port) in a thread."""

    def __init__(
        self,
        bind_ip: str,
        *,
        instance_id: str,
        private_ip: str,
        region: str,
        role_name: str,
        credentials: Mapping[str, str],
        allowed_client: str | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.allowed_client = allowed_client
        expiration = (datetime.now(UTC) + timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        role_credentials = {
            "Code": "Success",
            "LastUpdated": now,
            "Type": "AWS-HMAC",
            "AccessKeyId": credentials["AccessKeyId"],
            "SecretAccessKey": credentials["SecretAccessKey"],
            "Token": credentials["SessionToken"],
            "Expiration": expiration,
        }
        self._documents = {
            "/latest/meta-data/instance-id": instance_id,
            "/latest/meta-data/local-ipv4": private_ip,
            "/latest/meta-data/placement/region": region,
            "/latest/meta-data/iam/security-credentials/": role_name,
            f"/latest/meta-data/iam/security-credentials/{role_name}": json.dumps(role_credentials),
            "/latest/dynamic/instance-identity/document": json.dumps(
                {"instanceId": instance_id, "privateIp": private_ip, "region": region}
            ),
        }
        self._tokens: set[str] = set()
        self._server = ThreadingHTTPServer((bind_ip, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"imds-{instance_id}", daemon=True
        )

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet: the daemon's log is JSON
                return

            def _reply(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _allowed(self) -> bool:
                return service.allowed_client is None or self.client_address[0] == service.allowed_client

            def do_PUT(self) -> None:
                if not self._allowed():
                    return self._reply(403)
                if self.path != "/latest/api/token" or not self.headers.get(TOKEN_TTL_HEADER):
                    return self._reply(400)
                token = secrets.token_urlsafe(32)
                service._tokens.add(token)
                self._reply(200, token)

            def do_GET(self) -> None:
                if not self._allowed():
                    return self._reply(403)
                if self.headers.get(TOKEN_HEADER) not in service._tokens:
                    return self._reply(401)
                document = service._documents.get(self.path)
                self._reply(404) if document is None else self._reply(200, document)

        return Handler
