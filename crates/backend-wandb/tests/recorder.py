"""A tiny W&B server stand-in for exptrack-wandb's tests.

Listens on 127.0.0.1 (an ephemeral port, printed as the first stdout line), answers the GraphQL
operations the wandb client needs with plausible responses, answers file_stream with `{}`, accepts
file uploads, and appends every request as one JSON line to the log file given as argv[1].

With `--stateful` (argv[2]) it keeps, per run, the history lines the file stream sent, and answers
like a server that holds them: `UpsertBucket` reports the run's `historyLineCount`, and
`RunResumeStatus` (what `wandb sync` asks before continuing a run) reports the line count, the last
history line, the last summary and the config (the keys of every `UpsertBucket` merged); `GET
/_state` returns the state as JSON.
"""
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = open(sys.argv[1], "a", buffering=1)
STATEFUL = len(sys.argv) > 2 and sys.argv[2] == "--stateful"
# Per run name: {"history": {offset: line}, "summary": last summary line, "config": merged keys}.
RUNS = {}
LOCK = threading.Lock()
PORT = [0]
# Fault injection: {"match": substring of the path, "left": requests to fail, "status": code}.
FAULT = {"match": None, "left": 0, "status": 503}
# A query string appended to every upload URL, like the signature of a cloud storage pre-signed URL.
PRESIGN = {"query": None}


def take_fault(path):
    with LOCK:
        if FAULT["left"] > 0 and FAULT["match"] and FAULT["match"] in path:
            FAULT["left"] -= 1
            return FAULT["status"]
    return None


def run_state(name):
    return RUNS.setdefault(name, {"history": {}, "summary": None, "config": {}})


def resume_status(v):
    project = v.get("project") or "uncategorized"
    model = {"id": "UHJvamVjdDo=", "name": project, "entity": {"id": "RW50aXR5Og==", "name": "recorder-entity"}}
    with LOCK:
        st = RUNS.get(v.get("name"))
        if not st:
            model["bucket"] = None
            return {"data": {"model": model}}
        lines = [st["history"][k] for k in sorted(st["history"])]
        model["bucket"] = {
            "id": "UnVuOnYxOn" + v["name"],
            "name": v["name"],
            "summaryMetrics": st["summary"] or "{}",
            "displayName": v["name"],
            "logLineCount": 0,
            "historyLineCount": len(lines),
            "eventsLineCount": 0,
            "historyTail": json.dumps(lines[-1:]),
            "eventsTail": "[]",
            "config": json.dumps(st["config"]),
            "tags": [],
            "notes": None,
            "wandbConfig": json.dumps({"t": {}}),
        }
    return {"data": {"model": model}}


def gql_response(op, query, variables):
    q = query or ""
    v = variables or {}
    if STATEFUL and "RunResumeStatus" in q:
        return resume_status(v)
    if "upsertBucket" in q:
        name = v.get("name") or v.get("id") or "run"
        lines = 0
        if STATEFUL:
            with LOCK:
                st = run_state(name)
                if v.get("config"):
                    st["config"].update(json.loads(v["config"]))
                lines = len(st["history"])
        project = v.get("project") or "uncategorized"
        entity = v.get("entity") or "recorder-entity"
        return {
            "data": {
                "upsertBucket": {
                    "bucket": {
                        "id": "UnVuOnYxOn" + name,
                        "name": name,
                        "displayName": v.get("displayName") or name,
                        "description": v.get("description"),
                        "config": v.get("config") or "{}",
                        "sweepName": None,
                        "historyLineCount": lines,
                        "project": {
                            "id": "UHJvamVjdDo=",
                            "name": project,
                            "entity": {"id": "RW50aXR5Og==", "name": entity},
                        },
                    },
                    "inserted": True,
                }
            }
        }
    if "createRunFiles" in q:
        run = v.get("run") or "run"
        files = []
        suffix = "?" + PRESIGN["query"] if PRESIGN["query"] else ""
        for f in v.get("files") or []:
            files.append(
                {
                    "name": f,
                    "uploadUrl": "http://127.0.0.1:%d/upload/%s/%s%s" % (PORT[0], run, f, suffix),
                    "uploadHeaders": [],
                }
            )
        return {"data": {"createRunFiles": {"runID": "UnVu", "uploadHeaders": [], "files": files}}}
    if "__type" in q or "__schema" in q:
        # Introspection: report no optional fields/types.
        return {"data": {"TypeInfo": None, "QueryType": None, "MutationType": None, "__type": None}}
    if "serverInfo" in q:
        return {"data": {"serverInfo": {"cliVersionInfo": {}, "latestLocalVersionInfo": None, "features": []}}}
    if "viewer" in q:
        return {
            "data": {
                "viewer": {
                    "id": "VXNlcjox",
                    "entity": "recorder-entity",
                    "username": "recorder",
                    "flags": "{}",
                    "teams": {"edges": []},
                    "admin": False,
                    "email": "r@example.invalid",
                }
            }
        }
    if "model" in q and "bucket" in q:
        return {"data": {"model": None}}
    if "project" in q:
        return {"data": {"project": None}}
    return {"data": {}}


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = b""
            while True:
                line = self.rfile.readline().strip()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                raw += self.rfile.read(size)
                self.rfile.readline()
        return raw

    def _record(self, raw, extra=None, failed=None):
        try:
            body = json.loads(raw) if raw else None
        except Exception:
            body = {"_raw_len": len(raw)}
        rec = {
            "method": self.command,
            # Without the query: a pre-signed upload URL's signature is not part of the path.
            "path": self.path.split("?", 1)[0],
            "authorization": self.headers.get("Authorization"),
            "user_agent": self.headers.get("User-Agent"),
            "wandb_headers": {k.upper(): v for k, v in self.headers.items() if k.upper().startswith("X-WANDB-")},
            "body": body,
        }
        if extra:
            rec.update(extra)
        if failed:
            rec["failed_with"] = failed
        with LOCK:
            LOG.write(json.dumps(rec) + "\n")
        return body

    def _send(self, obj, code=200):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        raw = self._body()
        if self.path == "/_control":
            cfg = json.loads(raw)
            with LOCK:
                if "presign" in cfg:
                    PRESIGN["query"] = cfg.pop("presign")
                FAULT.update(cfg)
            self._send({})
            return
        failed = take_fault(self.path)
        body = self._record(raw, failed=failed)
        if failed:
            self._send({"error": "injected failure"}, failed)
            return
        if self.path.startswith("/graphql"):
            body = body or {}
            self._send(gql_response(body.get("operationName"), body.get("query"), body.get("variables")))
        elif self.path.endswith("/file_stream"):
            if STATEFUL:
                files = (body or {}).get("files") or {}
                with LOCK:
                    st = run_state(self.path.split("/")[-2])
                    h = files.get("wandb-history.jsonl")
                    if h:
                        for i, line in enumerate(h["content"]):
                            st["history"][h["offset"] + i] = line
                    summary = files.get("wandb-summary.json")
                    if summary:
                        st["summary"] = summary["content"][-1]
            self._send({})
        else:
            self._send({})

    def do_PUT(self):
        raw = self._body()
        failed = take_fault(self.path)
        self._record(b"", {"put_len": len(raw), "put_text": raw.decode("utf-8", "replace")[:100000]}, failed)
        if failed:
            self._send({"error": "injected failure"}, failed)
            return
        self._send({})

    def do_GET(self):
        if self.path == "/_state":
            with LOCK:
                self._send(RUNS)
            return
        self._record(b"")
        self._send({})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients closing keep-alive connections are not errors worth printing.
        pass


srv = Server(("127.0.0.1", 0), H)
PORT[0] = srv.server_address[1]
print(PORT[0], flush=True)
srv.serve_forever()
