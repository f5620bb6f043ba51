"""Reads a TensorBoard run directory with the real tensorboard (EventAccumulator) and tbparse and
prints what it found as JSON on stdout (used by tests/interop.rs).

Usage: python read_back.py RUN_DIR

Floats are also given as IEEE-754 bit patterns (f32 for scalars) so the comparison is exact.
"""

import json
import struct
import sys


def f32_bits(v):
    return struct.unpack("<I", struct.pack("<f", v))[0]


def main():
    run_dir = sys.argv[1]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from tbparse import SummaryReader
    import tensorboard

    out = {"tensorboard_version": tensorboard.__version__}

    ea = EventAccumulator(
        run_dir,
        size_guidance={"scalars": 0, "tensors": 0, "images": 0, "histograms": 0},
    )
    ea.Reload()
    tags = ea.Tags()
    out["ea_tags"] = {k: sorted(v) if isinstance(v, list) else v for k, v in tags.items()}
    out["ea_scalars"] = {
        tag: [[e.step, f32_bits(e.value)] for e in ea.Scalars(tag)] for tag in tags["scalars"]
    }
    out["ea_text"] = {
        tag: [[e.step, [s.decode("utf-8") for s in e.tensor_proto.string_val]] for e in ea.Tensors(tag)]
        for tag in tags["tensors"]
        if tag.endswith("/text_summary")
    }
    out["ea_images"] = {
        tag: [
            {"step": e.step, "width": e.width, "height": e.height, "png_len": len(e.encoded_image_string)}
            for e in ea.Images(tag)
        ]
        for tag in tags["images"]
    }
    out["ea_histograms"] = {
        tag: [
            {
                "step": e.step,
                "num": e.histogram_value.num,
                "min": e.histogram_value.min,
                "max": e.histogram_value.max,
                "bucket": list(e.histogram_value.bucket),
                "bucket_limit": list(e.histogram_value.bucket_limit),
            }
            for e in ea.Histograms(tag)
        ]
        for tag in tags["histograms"]
    }
    hp = {}
    for tag, content in ea.PluginTagToContent("hparams").items():
        data = HParamsPluginData.FromString(content)
        entry = {"version": data.version}
        kind = data.WhichOneof("data")
        if kind == "experiment":
            entry["hparams"] = [[h.name, h.type] for h in data.experiment.hparam_infos]
            entry["metrics"] = [m.name.tag for m in data.experiment.metric_infos]
            entry["name"] = data.experiment.name
        elif kind == "session_start_info":
            vals = {}
            for k, v in data.session_start_info.hparams.items():
                which = v.WhichOneof("kind")
                vals[k] = [which, getattr(v, which)]
            entry["hparams"] = vals
        elif kind == "session_end_info":
            entry["status"] = data.session_end_info.status
        hp[tag] = entry
    out["ea_hparams"] = hp

    reader = SummaryReader(run_dir)
    scalars = reader.scalars
    tb_scalars = {}
    for row in scalars.itertuples(index=False):
        tb_scalars.setdefault(row.tag, []).append([int(row.step), f32_bits(float(row.value))])
    out["tbparse_scalars"] = tb_scalars
    text = reader.text
    out["tbparse_text"] = [[r.tag, int(r.step), r.value] for r in text.itertuples(index=False)]
    hparams = reader.hparams
    out["tbparse_hparams"] = {r.tag: r.value for r in hparams.itertuples(index=False)}
    hist = reader.histograms
    out["tbparse_histograms"] = [
        {"tag": r.tag, "step": int(r.step), "counts": [float(c) for c in r.counts]}
        for r in hist.itertuples(index=False)
    ]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
