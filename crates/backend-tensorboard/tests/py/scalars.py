"""Prints every scalar of a TensorBoard run directory in storage order as JSON
[[step, tag, value], ...], read with tensorboard's own (legacy, unmigrated) event file loader (which verifies CRCs).

Usage: python scalars.py RUN_DIR
"""

import json
import os
import sys


def main():
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    run_dir = sys.argv[1]
    out = []
    if os.path.isdir(run_dir):
        for name in sorted(os.listdir(run_dir)):
            if "tfevents" not in name:
                continue
            for event in LegacyEventFileLoader(os.path.join(run_dir, name)).Load():
                if not event.HasField("summary"):
                    continue
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        out.append([event.step, value.tag, value.simple_value])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
