"""Reads a TensorBoard log directory with TensorBoard's own reader and prints what it found,
one fact per line, for tensorboard_logger_test.cc to check:

    file <name> records <n>          every record's length and data CRCs verified
    file_version <version>           the first event of each file
    scalar <tag> <step> <value>      value as Python's repr
    hparam_info <name> <DATA_TYPE_*>
    metric_info <tag>
    hparam <name> <number_value|string_value|bool_value> <value>
    session_end <STATUS_*>

Exits 2 when tensorboard is not installed, 1 when a record is corrupt.
"""

import os
import struct
import sys

try:
    from tensorboard.backend.event_processing import event_accumulator, event_file_loader
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
except ImportError as error:
    print(f"tensorboard is not importable by {sys.executable}: {error}. Run scripts/bootstrap, "
          f"or {sys.executable} -m pip install tensorboard", file=sys.stderr)
    sys.exit(2)


def check_records(path):
    """Walks the TFRecord framing and checks both CRCs of every record."""
    count = 0
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset < len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[offset + 8:offset + 12])
        if length_crc != masked_crc32c(header):
            sys.exit(f"{path}: record {count} has a bad length CRC")
        payload = data[offset + 12:offset + 12 + length]
        (data_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
        if len(payload) != length or data_crc != masked_crc32c(payload):
            sys.exit(f"{path}: record {count} has a bad data CRC or is truncated")
        offset += 16 + length
        count += 1
    return count


def main(log_dir):
    for name in sorted(os.listdir(log_dir)):
        if name.startswith("events.out.tfevents."):
            path = os.path.join(log_dir, name)
            print("file", name, "records", check_records(path))
            first = next(iter(event_file_loader.EventFileLoader(path).Load()))
            print("file_version", first.file_version)

    accumulator = event_accumulator.EventAccumulator(log_dir, size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    for tag in sorted(accumulator.Tags()[event_accumulator.SCALARS]):
        for event in accumulator.Scalars(tag):
            print("scalar", tag, event.step, repr(event.value))

    try:
        hparams = accumulator.PluginTagToContent("hparams")
    except KeyError:  # no hparams summaries in this run
        hparams = {}
    for tag, content in sorted(hparams.items()):
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        kind = data.WhichOneof("data")
        if kind == "experiment":
            for info in data.experiment.hparam_infos:
                print("hparam_info", info.name, api_pb2.DataType.Name(info.type))
            for info in data.experiment.metric_infos:
                print("metric_info", info.name.tag)
        elif kind == "session_start_info":
            for name, value in sorted(data.session_start_info.hparams.items()):
                which = value.WhichOneof("kind")
                print("hparam", name, which, repr(getattr(value, which)))
        elif kind == "session_end_info":
            print("session_end", api_pb2.Status.Name(data.session_end_info.status))


if __name__ == "__main__":
    main(sys.argv[1])
