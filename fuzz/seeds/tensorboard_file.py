"""Writes a small TensorBoard event file with tensorboard's own EventFileWriter (a seed)."""
import sys
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.proto.event_pb2 import Event
w = EventFileWriter(sys.argv[1])
for step in range(3):
    s = Summary(value=[Summary.Value(tag="loss", simple_value=1.0/(step+1))])
    w.add_event(Event(wall_time=1.0+step, step=step, summary=s))
s = Summary(value=[Summary.Value(tag="note", tensor=__import__("tensorboard").compat.proto.tensor_pb2.TensorProto(dtype=7, string_val=[b"hello"]))])
w.add_event(Event(wall_time=5.0, step=3, summary=s))
w.close()
