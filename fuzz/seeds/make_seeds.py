"""Writes fuzz/corpus/ (run from fuzz/ with the peers venv):

    python seeds/tensorboard_file.py /tmp/fuzz12-seeds/tb
    WANDB_MODE=offline python -c "import wandb; r = wandb.init(project=\"fuzz\", dir=\"/tmp/fuzz12-seeds/wb\", config={\"lr\": 0.1}); [r.log({\"loss\": 1.0 / (i + 1)}) for i in range(3)]; r.finish()"
    python seeds/make_seeds.py corpus ../docs/plot-example.png
"""
import os, sys, json, hashlib, glob, struct, base64
root = sys.argv[1]
def put(target, name, data):
    d = os.path.join(root, target); os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f: f.write(data)

# tfevents: raw file (mode odd) and framed record payloads (mode even)
tb = glob.glob("/tmp/fuzz12-seeds/tb/*tfevents*")[0]
raw = open(tb, "rb").read()
put("tfevents", "python-tensorboard-file", b"\x01" + raw)
recs, i = [], 0
while i + 12 <= len(raw):
    n = struct.unpack("<Q", raw[i:i+8])[0]; recs.append(raw[i+12:i+12+n]); i += 16 + n
put("tfevents", "python-tensorboard-records", b"\x00" + b"\xff".join(recs))
put("tfevents", "truncated", b"\x01" + raw[:len(raw) - 5])

# .wandb: raw file and its payloads
wb = glob.glob("/tmp/fuzz12-seeds/wb/wandb/*/*.wandb")[0]
raw = open(wb, "rb").read()
put("wandb_txlog", "python-wandb-file", b"\x01" + raw)
pay, i, cur = [], 7, b""
while i + 7 <= len(raw):
    left = 32768 - i % 32768
    if left < 7: i += left; continue
    n = struct.unpack("<H", raw[i+4:i+6])[0]; t = raw[i+6]
    if n == 0 and t == 0: break
    cur += raw[i+7:i+7+n]; i += 7 + n
    if t in (1, 4): pay.append(cur); cur = b""
put("wandb_txlog", "python-wandb-payloads", b"\x00" + b"\xff".join(pay))

# events.jsonl
ev = [
 {"kind": "params", "params": [["lr", {"float": 0.1}], ["opt", {"str": "adam"}], ["bs", {"int": 32}], ["amp", {"bool": False}]]},
 {"kind": "tags", "tags": [["team", "ml"]]},
 {"kind": "metrics", "step": 0, "timestamp_ms": 1764628500000, "values": [{"key": "train/loss", "value": 2.5}, {"key": "acc", "value": "NaN"}]},
 {"kind": "text", "step": 1, "timestamp_ms": 1764628500001, "tag": "notes", "text": "hello\nworld"},
 {"kind": "histogram", "step": 1, "timestamp_ms": 1764628500002, "tag": "w", "values": [1.0, "Infinity", -3.5]},
 {"kind": "image", "step": 1, "timestamp_ms": 1764628500003, "tag": "img", "width": 1, "height": 1, "channels": 3, "png": base64.b64encode(b"\x89PNG").decode()},
 {"kind": "artifact", "path": "/tmp/x.bin", "name": "checkpoints/x.bin", "artifact_kind": "model", "step": 3},
 {"kind": "status", "status": "completed", "timestamp_ms": 1764628500004},
]
lines = b"".join(json.dumps(dict([("seq", i + 1)] + list(e.items())), separators=(",", ":")).encode() + b"\n" for i, e in enumerate(ev))
put("events_jsonl", "all-kinds", b"\x05" + lines)
put("events_jsonl", "torn-tail", b"\x00" + lines + b'{"seq":9,"kind":"met')

# events.jsonl with checkpoint reports: three commits (the third says retention deleted the first),
# a non-finite metric, a checkpoint in object storage, and the run's end
def ckpt(step, best, pruned, location):
    files = [{"name": "model.bpk", "size": 1000 * step, "hash": "blake3:" + hashlib.sha256(b"m%d" % step).hexdigest()},
             {"name": "optim.bpk", "size": 7, "hash": "sha256:" + hashlib.sha256(b"o%d" % step).hexdigest()}]
    e = {"kind": "checkpoint", "step": step, "epoch": step // 2, "timestamp_ms": 1764628500000 + step, "location": location,
         "files": files, "metrics": [{"key": "val_loss", "value": 1.0 / step}, {"key": "acc", "value": "NaN"}], "is_best": best}
    if pruned: e["pruned"] = pruned
    return e
ck = [
 {"kind": "metrics", "step": 2, "timestamp_ms": 1764628500000, "values": [{"key": "train/loss", "value": 0.5}]},
 ckpt(2, True, [], "/ckpt/exp-1/ckpt-000000000002"),
 ckpt(4, True, [], "s3://bucket/prefix/exp-1/ckpt-000000000004"),
 ckpt(6, False, [2], "/ckpt/exp-1/ckpt-000000000006"),
 {"kind": "status", "status": "completed", "timestamp_ms": 1764628500009},
]
ck_lines = b"".join(json.dumps(dict([("seq", i + 1)] + list(e.items())), separators=(",", ":")).encode() + b"\n" for i, e in enumerate(ck))
put("events_jsonl", "checkpoints", b"\x06" + ck_lines)

# checkpoint.json + registry.json + model.bin
model = b"\x00\x01weights" * 8
sha = hashlib.sha256(model).hexdigest()
fe = {"name": "model.bin", "size": len(model), "sha256": sha, "stored_size": len(model), "encoding": "raw"}
info = {"format_version": 1, "experiment_id": "exp", "step": 1, "epoch": 0, "metrics": {"val_loss": 0.5, "acc": "NaN"},
        "is_best": True, "created_ms": 1764628500000, "files": [fe], "extra": {"seed": 7}}
reg = {"format_version": 1, "experiment_id": "exp", "latest": 1, "best": 1, "monitor": "val_loss", "mode": "min",
       "checkpoints": [{"step": 1, "epoch": 0, "dir": "ckpt-000000000001", "created_ms": 1764628500000, "is_best": True,
                        "metrics": {"val_loss": 0.5, "acc": "NaN"}, "total_size": len(model), "stored_size": len(model), "files": [fe]}]}
put("checkpoint_json", "valid", json.dumps(info, indent=2).encode() + b"\xff" + json.dumps(reg, indent=2).encode() + b"\xff" + model)
put("checkpoint_json", "no-registry", json.dumps(info).encode() + b"\xff\xff" + model)

# config TOML
put("config_toml", "full", b'''[experiment]
name = "mnist-cnn"
description = "a test"
tags = ["cnn", "mnist"]
version = "1.2"
hash_exclude = ["training.epochs"]

[tracking]
use_tensorboard = true
use_mlflow = true
mlflow_tracking_uri = "http://127.0.0.1:5000"
use_wandb = false
queue_capacity = 1024
finish_timeout_secs = 2.5

[training]
epochs = 3
lr = 1e-3
betas = [0.9, 0.999]
schedule = { kind = "cosine", warmup = 100 }
when = 1979-05-27T07:32:00Z

[checkpointing]
dir = "checkpoints"
max_checkpoints = 3
monitor = "val_loss"
''')
put("config_toml", "minimal", b'[experiment]\nname = "x"\n')

# IDX
def idx(t, dims, body): return bytes([0, 0, t, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + body
put("idx", "u8-images", idx(8, [2, 3, 3], bytes(range(18))))
put("idx", "u8-labels", idx(8, [4], bytes([0, 1, 9, 3])))
put("idx", "f32", idx(0x0D, [2], struct.pack(">ff", 1.5, -2.0)))
put("idx", "f64", idx(0x0E, [1, 1], struct.pack(">d", 3.25)))

# PNG: the repository's plot, header chunks only
png = open(sys.argv[2], "rb").read()
put("png_dimensions", "plot-head", png[:64])

# MLflow answers: <status selector><body>, 0xFF between answers; first byte picks the call
exp = {"experiment": {"experiment_id": "1", "name": "exp", "artifact_location": "mlflow-artifacts:/1", "lifecycle_stage": "active", "last_update_time": "1764628500000", "creation_time": "1764628500000", "tags": [{"key": "k", "value": "v"}]}}
info_r = {"run_id": "r", "run_uuid": "r", "run_name": "run", "experiment_id": "1", "user_id": "u", "status": "RUNNING", "start_time": "1764628500000", "artifact_uri": "mlflow-artifacts:/1/r/artifacts", "lifecycle_stage": "active"}
run = {"info": info_r, "data": {"metrics": [{"key": "loss", "value": 0.5, "timestamp": "1764628500000", "step": "1"}], "params": [{"key": "lr", "value": "0.1"}], "tags": [{"key": "mlflow.runName", "value": "run"}]}}
mv = {"model_version": {"name": "m", "version": "1", "creation_timestamp": "1764628500000", "current_stage": "None", "source": "runs:/r/model", "run_id": "r", "status": "READY", "aliases": ["champion"]}}
J = lambda o: json.dumps(o).encode()
seeds = {
 0: [b"\x05" + J({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such experiment"}), b"\x00" + J({"experiment_id": "1"})],
 1: [b"\x00" + J({"run": {"info": info_r}})],
 2: [b"\x00" + J({"run": run})],
 3: [b"\x00" + J({"runs": [run], "next_page_token": "abc"})],
 4: [b"\x00" + J({"run_info": info_r})],
 5: [b"\x00" + J({"metrics": [{"key": "loss", "value": 0.5, "timestamp": "1764628500000", "step": "1"}], "next_page_token": "t1"}), b"\x00" + J({"metrics": [{"key": "loss", "value": "NaN", "timestamp": 1, "step": 2}]})],
 6: [b"\x05" + J({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "x"}), b"\x00" + J({"registered_model": {"name": "m", "creation_timestamp": "1", "last_updated_timestamp": "1", "aliases": [{"alias": "champion", "version": "1"}]}})],
 7: [b"\x00" + J(mv)],
 8: [b"\x00" + J(mv)],
 9: [b"\x00" + J(mv)],
 10: [b"\x00" + J({"model": {"info": {"model_id": "m-1", "experiment_id": "1", "name": "model", "artifact_uri": "mlflow-artifacts:/1/models/m-1/artifacts", "status": "LOGGED_MODEL_READY", "creation_timestamp_ms": "1"}}})],
 11: [b"\x00" + J({"model": {"info": {"model_id": "m-1", "experiment_id": "1", "name": "model", "artifact_uri": "mlflow-artifacts:/1/models/m-1/artifacts", "status": "LOGGED_MODEL_PENDING"}}})],
 12: [b"\x003.17.2\n"],
 13: [b"\x00{}", b"\x06" + J({"error_code": "INVALID_PARAMETER_VALUE", "message": "Changing param values is not allowed"})],
}
for call, ans in seeds.items():
    put("mlflow_response", "call-%02d" % call, bytes([call]) + b"\xff".join(ans))

# W&B answers: UpsertBucket, file_stream, UpsertBucket, CreateRunFiles, PUT, file_stream
ub = J({"data": {"upsertBucket": {"bucket": {"id": "QnVja2V0", "name": "fuzzrun", "displayName": "r", "project": {"id": "p", "name": "fuzz", "entity": {"id": "e", "name": "me"}}, "historyLineCount": 3}, "inserted": True}}})
fs = J({"exitcode": None, "limits": {}})
crf = J({"data": {"createRunFiles": {"runID": "x", "uploadHeaders": ["Content-Type: application/octet-stream", "X-Extra:1"], "files": [{"name": "model.bin", "uploadUrl": "{{SERVER}}/upload"}]}}})
put("wandb_response", "session", b"\xff".join([b"\x00" + ub, b"\x00" + fs, b"\x00" + ub, b"\x00" + crf, b"\x00", b"\x00" + fs]))
put("wandb_response", "errors", b"\xff".join([b"\x00" + J({"errors": [{"message": "project not found"}], "data": None})]))
put("wandb_response", "stopped", b"\xff".join([b"\x00" + ub, b"\x00" + J({"stopped": True}), b"\x00{\"a\":NaN,\"b\":-Infinity}"]))
