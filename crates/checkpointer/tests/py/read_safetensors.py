"""Reads a .safetensors file with the real `safetensors` package; prints its tensors and metadata as JSON."""
import json
import sys

from safetensors import safe_open
from safetensors.numpy import load_file

path = sys.argv[1]
tensors = load_file(path)
with safe_open(path, framework="numpy") as f:
    metadata = f.metadata()
print(json.dumps({
    "metadata": metadata,
    "tensors": {
        name: {"shape": list(a.shape), "dtype": str(a.dtype), "values": a.astype("float64").ravel().tolist()}
        for name, a in tensors.items()
    },
}))
