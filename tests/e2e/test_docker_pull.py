"""``--pull``: SGLANG_IMAGE pulled with progress, from a registry on loopback (no internet).

The registry is a minimal Docker Registry v2 server written here (a test stand-in for a real
registry): one image of one small layer. The engine trusts 127.0.0.0/8 registries over HTTP.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import docker
import pytest
from docker_e2e import free_port, quiet_console, settings_of

from sglbench.errors import DockerError
from sglbench.execute.docker_pull import pull_image

pytestmark = pytest.mark.e2e
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _image_blobs() -> tuple[bytes, dict[str, bytes]]:
    """(manifest, digest -> blob) of an image with one 4 MB file."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        payload = os.urandom(4 * 1024 * 1024)
        info = tarfile.TarInfo("payload.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    layer_bytes = layer.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [_digest(layer_bytes)]}}
                        ).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config), "digest": _digest(config)},
        # Served uncompressed; the engine detects that itself.
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer_bytes), "digest": _digest(layer_bytes)}],
    }).encode()
    return manifest, {_digest(config): config, _digest(layer_bytes): layer_bytes}


@pytest.fixture
def registry() -> Iterator[str]:
    """A registry on 127.0.0.1 serving ``sglbench-pull-test:1``; yields its host:port."""
    manifest, blobs = _image_blobs()

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            path = self.path.split("?")[0]
            if path == "/v2/":
                data, kind = b"{}", "application/json"
            elif path == "/v2/sglbench-pull-test/manifests/1" or path.endswith(
                    "/manifests/" + _digest(manifest)):
                data, kind = manifest, MANIFEST_TYPE
            elif "/blobs/" in path and path.rsplit("/", 1)[1] in blobs:
                data, kind = blobs[path.rsplit("/", 1)[1]], "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Docker-Content-Digest", _digest(data))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_pull_brings_the_image_with_progress(engine: docker.DockerClient, registry: str,
                                             e2e_env: dict[str, str]) -> None:
    image = f"{registry}/sglbench-pull-test:1"
    settings = settings_of(e2e_env, SGLANG_IMAGE=image)
    console = quiet_console()
    try:
        pull_image(settings, console)
        assert image in engine.images.get(image).tags
        assert f"pulled {image} on the local engine" in console.file.getvalue()
    finally:
        engine.images.remove(image, force=True)


def test_pull_of_an_unknown_image_is_one_line(engine: docker.DockerClient, registry: str,
                                              e2e_env: dict[str, str]) -> None:
    image = f"{registry}/sglbench-pull-test:no-such-tag"
    settings = settings_of(e2e_env, SGLANG_IMAGE=image)
    with pytest.raises(DockerError, match=f"SGLANG_IMAGE={image}: pull failed on the local"):
        pull_image(settings, quiet_console())
