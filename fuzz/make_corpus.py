#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/: a few small valid files per
reader and a few that break one rule each. Run from anywhere; rewrites them."""
import gzip
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"


def write(target, name, data):
    folder = ROOT / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data.encode() if isinstance(data, str) else data)


def safetensors(header, data=b""):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def idx(dims, data):
    return struct.pack(">I", 0x0800 | len(dims)) + b"".join(struct.pack(">I", d) for d in dims) + data


two = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
       "b": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]},
       "__metadata__": {"format": "pt"}}
write("safetensors", "two_tensors", safetensors(two, bytes(range(24))))
write("safetensors", "every_dtype", safetensors(
    {"f64": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]},
     "bf16": {"dtype": "BF16", "shape": [2], "data_offsets": [8, 12]},
     "f16": {"dtype": "F16", "shape": [2], "data_offsets": [12, 16]},
     "i32": {"dtype": "I32", "shape": [1], "data_offsets": [16, 20]},
     "bool": {"dtype": "BOOL", "shape": [2, 1], "data_offsets": [20, 22]},
     "empty": {"dtype": "F32", "shape": [0, 3], "data_offsets": [22, 22]}}, bytes(22)))
write("safetensors", "truncated_data", safetensors(two, bytes(20)))
write("safetensors", "overlap", safetensors(
    {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
     "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)))
write("safetensors", "bad_dtype", safetensors(
    {"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)))

pixels = bytes(range(0, 180, 10))
write("idx", "images", idx([2, 3, 3], pixels))
write("idx", "images.gz", gzip.compress(idx([2, 3, 3], pixels), mtime=0))
write("idx", "labels", idx([5], bytes([0, 3, 9, 1, 2])))
write("idx", "labels.gz", gzip.compress(idx([5], bytes([0, 3, 9, 1, 2])), mtime=0))
write("idx", "label_out_of_range", idx([2], bytes([4, 10])))
write("idx", "truncated_images", idx([2, 3, 3], pixels[:-1]))
write("idx", "short_header", idx([2, 3, 3], b"")[:10])

write("text", "fortune", "A day without sunshine is like, night.\n%\nQ: Why? A: Because.\n%\n")
write("text", "bytes", bytes([0, 255, 10, 128, 37, 0]))
write("text", "one_byte", "x")

for name in ["none", "block", "every-3", "alternate", "sqrt", "selective", "nested",
             "every-0", "every-", "every-99999999999", "Block"]:
    write("plan_parse", name, name)
