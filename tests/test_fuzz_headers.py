"""The safetensors reader against arbitrary input: random bytes, and random JSON headers
shaped like the format's (names, dtypes, shapes and offsets drawn freely) with random data
lengths. Every input gives a valid parse or a UserError: no other exception, no hang.
3,400 cases each (10,200 in all); a valid parse must describe bytes that lie inside the file."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.checkpoints import read_header
from core.errors import UserError

CASES = settings(max_examples=3400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
FOLDER = Path(tempfile.mkdtemp(prefix="fuzz-headers-"))
DTYPES = ["BF16", "F16", "F32", "F64", "I8", "U8", "I16", "I32", "I64", "BOOL", "F8_E4M3", "F8_E5M2", "U16", "F8_E8M0", "Q4", ""]
sizes = st.one_of(st.integers(0, 64), st.integers(-2, 2**64 + 1), st.sampled_from([2**63, 2**64 - 1, 2**32]))
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
entries = st.fixed_dictionaries({}, optional={
    "dtype": st.sampled_from(DTYPES) | json_values,
    "shape": st.lists(sizes, max_size=4) | json_values,
    "data_offsets": st.lists(sizes, min_size=2, max_size=2) | st.lists(sizes, max_size=3) | json_values,
}) | json_values
headers = st.dictionaries(st.text(max_size=12) | st.just("__metadata__"), entries, max_size=5) | json_values


def check(path: Path) -> None:
    try:
        parsed = read_header(path)
    except UserError as exc:
        assert str(exc).startswith("model: ") and "\n" not in str(exc)
        return
    size = path.stat().st_size
    for entry in parsed.values():
        assert entry.start >= 0 and entry.start + entry.nbytes <= size and entry.nbytes == entry.numel * entry.dtype.itemsize


@CASES
@given(st.binary(max_size=256))
def test_arbitrary_bytes_give_a_parse_or_a_user_error(raw):
    path = FOLDER / "bytes.safetensors"
    path.write_bytes(raw)
    check(path)


@CASES
@given(headers, st.integers(0, 256), st.integers(-16, 16), st.booleans())
def test_arbitrary_json_headers_give_a_parse_or_a_user_error(header, data_length, length_error, as_text):
    encoded = json.dumps(header).encode() if as_text else json.dumps(header, ensure_ascii=False).encode("utf-8", "surrogatepass")
    declared = max(0, len(encoded) + length_error)
    path = FOLDER / "header.safetensors"
    path.write_bytes(struct.pack("<Q", declared) + encoded + bytes(data_length))
    check(path)


tensors = st.lists(st.tuples(st.text(min_size=1, max_size=8), st.sampled_from(DTYPES[:12]), st.lists(st.integers(0, 5), max_size=3)),
                   max_size=5, unique_by=lambda t: t[0])
mutations = st.none() | st.tuples(st.integers(0, 4), st.sampled_from(["dtype", "shape", "data_offsets"]), json_values | sizes)


@CASES
@given(tensors, mutations, st.integers(0, 3))
@example([("\n", "BF16", [])], (0, "shape", [1]), 0)  # a name with a newline once split the refusal over two lines
def test_well_formed_headers_parse_exactly_and_their_mutations_are_refused_or_parse(specs, mutation, trailing):
    """Headers built by the format's rules parse to what was written; one field changed
    after (or bytes left over) gives a parse or a UserError."""
    from core.checkpoints import TORCH_DTYPES

    header, offset = {}, 0
    for name, dtype, shape in specs:
        if name == "__metadata__":
            continue
        nbytes = TORCH_DTYPES[dtype].itemsize
        for n in shape:
            nbytes *= n
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if mutation is not None and header:
        index, field, value = mutation
        header[list(header)[index % len(header)]][field] = value
    encoded = json.dumps(header).encode()
    path = FOLDER / "built.safetensors"
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes(offset + (trailing if mutation else 0)))
    if mutation is None:
        parsed = read_header(path)
        assert {n: (e.shape, e.nbytes) for n, e in parsed.items()} == {
            n: (tuple(h["shape"]), h["data_offsets"][1] - h["data_offsets"][0]) for n, h in header.items()}
    else:
        check(path)
