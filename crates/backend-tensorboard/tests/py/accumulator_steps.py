"""Prints the steps of one scalar tag of a TensorBoard run directory as JSON [step, ...], read with
tensorboard's EventAccumulator (what the dashboards are built on), in the order it returns them.

Usage: python accumulator_steps.py RUN_DIR TAG
"""

import json
import sys


def main():
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, tag = sys.argv[1], sys.argv[2]
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    json.dump([e.step for e in acc.Scalars(tag)], sys.stdout)


if __name__ == "__main__":
    main()
