"""The workload of `cargo bench --bench tensorboard` written with Python tensorboardX.

20,000 steps x 10 tags = 200,000 scalars through `SummaryWriter.add_scalar`, then `flush()`
(everything handed to the OS), timed with time.perf_counter; repeated, best and median reported.

Usage: $EXPTRACK_PEER_PYTHON benches/peers/tensorboardx_scalars.py [--repeat N] [--max-queue N]
(the peer venv from scripts/peers.sh has tensorboardX==2.6.5)

Prints one JSON line: {"peer": "tensorboardX", "version": ..., "scalars": ..., "best_scalars_per_s": ...,
"median_scalars_per_s": ..., "runs_s": [...]}.
"""

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time

STEPS = 20_000
TAGS = [
    "train/loss",
    "train/acc",
    "train/lr",
    "train/grad_norm",
    "train/loss_scale",
    "val/loss",
    "val/acc",
    "throughput/items_per_s",
    "system/cpu_percent",
    "system/memory_percent",
]


def one_run(root, max_queue):
    from tensorboardX import SummaryWriter

    # Values prepared outside the timed loop, as in the Rust benchmark (events built beforehand).
    values = [[math.sin(step * 0.001 + i) for i in range(len(TAGS))] for step in range(STEPS)]
    logdir = tempfile.mkdtemp(dir=root)
    writer = SummaryWriter(logdir=logdir, max_queue=max_queue)
    start = time.perf_counter()
    for step in range(STEPS):
        row = values[step]
        for i, tag in enumerate(TAGS):
            writer.add_scalar(tag, row[i], step, walltime=1_700_000_000.0 + step / 1000.0)
    writer.flush()
    elapsed = time.perf_counter() - start
    writer.close()
    shutil.rmtree(logdir)
    return elapsed


def main():
    import tensorboardX

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    # tensorboardX's default queue (10 events) makes add_scalar block on its writer; a large
    # queue shows what the encoding alone costs.
    parser.add_argument("--max-queue", type=int, default=10)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="tbx-bench-")
    try:
        one_run(root, args.max_queue)  # warm-up (imports, first file)
        runs = [one_run(root, args.max_queue) for _ in range(args.repeat)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    scalars = STEPS * len(TAGS)
    print(
        json.dumps(
            {
                "peer": "tensorboardX",
                "version": tensorboardX.__version__,
                "max_queue": args.max_queue,
                "scalars": scalars,
                "best_scalars_per_s": scalars / min(runs),
                "median_scalars_per_s": scalars / statistics.median(runs),
                "runs_s": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
