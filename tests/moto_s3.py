"""A real S3 API on loopback for tests: moto's standalone server, in memory, no account.

``MotoS3`` runs moto's ``ThreadedMotoServer`` on a free 127.0.0.1 port. Its data
lives in this test process, so ``outage()`` can stop the server, answer
``503 Slow Down`` on its port meanwhile (as an S3 endpoint does when it cannot
serve) while recording every request that arrives, and start it again with its
buckets, objects and multipart uploads intact, as a real outage would leave them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from .harness import free_port

ACCESS_KEY_ID = "AKIATASKHOOKTEST0001"
#: Distinctive, so a test can search logs and answers for it.
SECRET_ACCESS_KEY = "tAsKhOoK-sEcReT-nEvEr-sHoWn-0123456789"
REGION = "us-east-1"


class Outage:
    """The S3 port while moto is stopped: every request answers 503 and is recorded."""

    def __init__(self, port: int) -> None:
        self.requests: list[str] = []
        outage = self

        class Handler(BaseHTTPRequestHandler):
            def _refuse(self) -> None:
                outage.requests.append(f"{self.command} {self.path}")
                length = int(self.headers.get("content-length") or 0)
                with contextlib.suppress(OSError):
                    self.rfile.read(length)
                    body = b"<Error><Code>SlowDown</Code><Message>outage</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _refuse  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def seen(self, fragment: str) -> bool:
        return any(fragment in request for request in self.requests)

    def end(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class MotoS3:
    """moto's S3 server on ``127.0.0.1:<free port>``; ``endpoint`` is its URL."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server: ThreadedMotoServer | None = None
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    def start(self) -> MotoS3:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @contextlib.contextmanager
    def outage(self) -> Iterator[Outage]:
        """Stop S3 (its port answers 503 meanwhile), then start it again with its data."""
        self.stop()
        down = Outage(self.port)
        try:
            yield down
        finally:
            down.end()
            self.start()

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name=REGION,
        )

    def bucket(self) -> str:
        """A new, empty bucket (moto's data is shared by the tests of this process)."""
        name = f"taskhook-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def unfinished_uploads(self, bucket: str) -> list[str]:
        listed = self.client().list_multipart_uploads(Bucket=bucket)
        return [upload["Key"] for upload in listed.get("Uploads", [])]

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The settings a taskhook process needs to keep its archive in ``bucket``."""
        return {
            "ARCHIVE_URL": f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        }
