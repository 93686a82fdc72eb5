"""Local HTTP servers that play partners: a Kubernetes API server (NodeList and watch
JSON, bearer-token auth) and a paginated REST partner with ETags and injectable faults."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


def k8s_node(name: str, cpu="3920m", memory="16303140Ki", gpus: str | None = None, ready=True, region="eu-west",
             zone="eu-west-a", itype="m5.xlarge", labels: dict | None = None, taints: list | None = None,
             rv="1") -> dict[str, Any]:
    alloc = {"cpu": cpu, "memory": memory, "ephemeral-storage": "95Gi", "pods": "110"}
    if gpus:
        alloc["nvidia.com/gpu"] = gpus
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "resourceVersion": rv, "labels": {
            "topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": zone,
            "node.kubernetes.io/instance-type": itype, **(labels or {})}},
        "spec": {"taints": taints or []},
        "status": {"capacity": alloc, "allocatable": alloc,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


class _Server:
    def __init__(self, handler_cls: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        self.httpd.daemon_threads = True
        self.httpd.state = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def _json(self, status: int, doc: Any, headers: dict | None = None) -> None:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class KubernetesAPI(_Server):
    """GET /api/v1/nodes (list) and ?watch=true (a stream of watch events, then close);
    pods in namespaces: list (equality label selectors), get, create (409 if the name is
    taken), merge-patch of labels, delete, and the Eviction subresource honouring
    PodDisruptionBudgets (``pdbs``: selector labels and minAvailable; 429 when an eviction
    would break one). A created pod turns Ready after ``ready_after_reads`` reads of it
    (the kubelet starting it), or never if its name is in ``never_ready``."""

    def __init__(self, token: str = "secret-token") -> None:
        self.token = token
        self.nodes: dict[str, dict] = {}
        self.watch_events: list[dict] = []
        self.requests: list[str] = []
        self.fail_next = 0
        self.pods: dict[tuple[str, str], dict] = {}
        self.pdbs: list[dict] = []
        self.ready_after_reads = 2
        self.never_ready: set[str] = set()
        self.evictions: list[str] = []
        self.created: list[str] = []
        super().__init__(_K8sHandler)

    def add_pod(self, name: str, node: str, labels: dict, namespace: str = "default", ready: bool = True) -> None:
        self.pods[(namespace, name)] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels), "uid": f"uid-{name}",
                         "resourceVersion": "1", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                                       "name": "rs", "uid": "rs-1"}]},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.example/app:1"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}

    def ready(self, pod: dict) -> bool:
        return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


class _K8sHandler(_Handler):
    def do_GET(self) -> None:  # noqa: N802
        st: KubernetesAPI = self.server.state  # type: ignore[attr-defined]
        st.requests.append(self.path)
        if self.headers.get("Authorization") != f"Bearer {st.token}":
            return self._json(401, {"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401})
        if st.fail_next:
            st.fail_next -= 1
            return self._json(500, {"kind": "Status", "status": "Failure", "code": 500})
        url = urlparse(self.path)
        if "/pods" in url.path:
            return self._pods_get(st, url)
        if url.path != "/api/v1/nodes":
            return self._json(404, {"kind": "Status", "code": 404})
        if parse_qs(url.query).get("watch") == ["true"]:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for ev in st.watch_events:
                line = json.dumps(ev).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
                time.sleep(0.01)
            self.wfile.write(b"0\r\n\r\n")
            return None
        return self._json(200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "100"},
                                "items": list(st.nodes.values())})


    # -- pods ------------------------------------------------------------------
    def _status(self, code: int, reason: str, message: str = "") -> None:
        self._json(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                          "message": message, "code": code})

    def _authorized(self, st: "KubernetesAPI") -> bool:
        st.requests.append(f"{self.command} {self.path}")
        if self.headers.get("Authorization") != f"Bearer {st.token}":
            self._status(401, "Unauthorized")
            return False
        return True

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def _route(self, path: str) -> tuple[str, str | None, str | None]:
        """/api/v1/namespaces/NS/pods[/NAME[/eviction]] -> (ns, name, sub)."""
        parts = path.strip("/").split("/")
        ns = parts[3] if len(parts) > 3 else "default"
        return ns, parts[5] if len(parts) > 5 else None, parts[6] if len(parts) > 6 else None

    def _pods_get(self, st: "KubernetesAPI", url) -> None:
        ns, name, _ = self._route(url.path)
        if name:
            pod = st.pods.get((ns, name))
            if pod is None:
                return self._status(404, "NotFound", f'pods "{name}" not found')
            pod["metadata"]["_reads"] = pod["metadata"].get("_reads", 0) + 1
            if (pod["metadata"]["_reads"] >= st.ready_after_reads and name not in st.never_ready
                    and pod["metadata"].get("_created")):
                pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
            return self._json(200, _public(pod))
        selector = dict(kv.split("=", 1) for kv in parse_qs(url.query).get("labelSelector", [""])[0].split(",")
                        if "=" in kv)
        items = []
        for (pns, pname), pod in sorted(st.pods.items()):
            if pns == ns and all(pod["metadata"]["labels"].get(k) == v for k, v in selector.items()):
                pod["metadata"]["_reads"] = pod["metadata"].get("_reads", 0) + 1
                if (pod["metadata"]["_reads"] >= st.ready_after_reads and pname not in st.never_ready
                        and pod["metadata"].get("_created")):
                    pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
                items.append(_public(pod))
        return self._json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"},
                                "items": items})

    def do_POST(self) -> None:  # noqa: N802
        st: KubernetesAPI = self.server.state  # type: ignore[attr-defined]
        if not self._authorized(st):
            return None
        ns, name, sub = self._route(urlparse(self.path).path)
        body = self._body()
        if sub == "eviction":
            pod = st.pods.get((ns, name))
            if pod is None:
                return self._status(404, "NotFound", f'pods "{name}" not found')
            for pdb in st.pdbs:
                match = [p for p in st.pods.values() if st.ready(p) and
                         all(p["metadata"]["labels"].get(k) == v for k, v in pdb["selector"].items())]
                if pod in match and len(match) - 1 < pdb["minAvailable"]:
                    return self._status(429, "TooManyRequests",
                                        "Cannot evict pod as it would violate the pod's disruption budget.")
            del st.pods[(ns, name)]
            st.evictions.append(name)
            return self._json(201, {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201})
        if body.get("kind") != "Pod" or not body.get("metadata", {}).get("name"):
            return self._status(400, "BadRequest", "a Pod with metadata.name is required")
        key = (ns, body["metadata"]["name"])
        if key in st.pods:
            return self._status(409, "AlreadyExists", f'pods "{key[1]}" already exists')
        body["metadata"].update(uid=f"uid-{key[1]}", resourceVersion="1", _created=True)
        body["status"] = {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}
        st.pods[key] = body
        st.created.append(key[1])
        return self._json(201, _public(body))

    def do_PATCH(self) -> None:  # noqa: N802
        st: KubernetesAPI = self.server.state  # type: ignore[attr-defined]
        if not self._authorized(st):
            return None
        ns, name, _ = self._route(urlparse(self.path).path)
        pod = st.pods.get((ns, name))
        if pod is None:
            return self._status(404, "NotFound", f'pods "{name}" not found')
        labels = self._body().get("metadata", {}).get("labels", {})
        pod["metadata"]["labels"].update(labels)
        return self._json(200, _public(pod))

    def do_DELETE(self) -> None:  # noqa: N802
        st: KubernetesAPI = self.server.state  # type: ignore[attr-defined]
        if not self._authorized(st):
            return None
        ns, name, _ = self._route(urlparse(self.path).path)
        pod = st.pods.pop((ns, name), None)
        if pod is None:
            return self._status(404, "NotFound", f'pods "{name}" not found')
        return self._json(200, _public(pod))     # the API answers a pod deletion with the pod


def _public(pod: dict) -> dict:
    """The pod as the API returns it (without the fake's bookkeeping)."""
    meta = {k: v for k, v in pod["metadata"].items() if not k.startswith("_")}
    return {**pod, "metadata": meta}


class RestPartner(_Server):
    """GET /v1/machines?page=N: pages of machines with ETags; faults can be queued."""

    def __init__(self, machines: list[dict], page_size: int = 3) -> None:
        self.machines = machines
        self.page_size = page_size
        self.faults: list[str] = []  # "500", "429", "timeout", "malformed", "no-items", popped per request
        self.next_base = ""          # pages link to their next page on this origin instead (e.g. another server)
        self.requests: list[tuple[str, str | None]] = []
        self.not_modified = 0
        super().__init__(_RestHandler)


class _RestHandler(_Handler):
    def do_GET(self) -> None:  # noqa: N802
        st: RestPartner = self.server.state  # type: ignore[attr-defined]
        st.requests.append((self.path, self.headers.get("If-None-Match")))
        fault = st.faults.pop(0) if st.faults else None
        if fault == "500":
            return self._json(500, {"error": "internal"})
        if fault == "429":
            return self._json(429, {"error": "slow down"}, {"Retry-After": "1"})
        if fault == "timeout":
            time.sleep(2.0)
            return self._json(200, {"items": []})
        if fault == "malformed":
            return self._json(200, b"{\"items\": [ {\"id\": ")
        if fault == "no-items":
            return self._json(200, {"data": "surprise"})
        page = int(parse_qs(urlparse(self.path).query).get("page", ["1"])[0])
        chunk = st.machines[(page - 1) * st.page_size: page * st.page_size]
        more = page * st.page_size < len(st.machines)
        doc = {"items": chunk, "links": {"next": f"{st.next_base}/v1/machines?page={page + 1}" if more else None}}
        etag = f'"{hash(json.dumps(doc, sort_keys=True)) & 0xFFFFFFFF:x}"'
        if self.headers.get("If-None-Match") == etag:
            st.not_modified += 1
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return None
        return self._json(200, doc, {"ETag": etag})


class Published(list):
    """A Discoverer's ``publish``: keeps each published batch of events, in order."""

    async def __call__(self, events) -> None:
        self.append(events)
