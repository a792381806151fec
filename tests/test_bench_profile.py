"""The step profiler's trace reader (protobuf wire format by hand) and source attribution, on hand-built
inputs and on one small traced loop."""

import pytest

from benchmarks import profile_step


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _xspace() -> bytes:
    """One plane: metadata 7 'fusion.3' and 9 'dot.1'; a line with fusion.3 twice (5 and 7 ps) and dot.1
    once (11 ps), a 64-bit field and an offset the reader must skip."""
    meta = [(7, "fusion.3"), (9, "dot.1")]
    entries = b"".join(
        _field(4, _field(1, k) + _field(2, _field(1, k) + _field(2, name.encode()))) for k, name in meta
    )
    events = b"".join(
        _field(4, _field(1, k) + _field(2, 123) + _field(3, ps)) for k, ps in ((7, 5), (9, 11), (7, 7))
    )
    fixed64 = _varint(6 << 3 | 1) + bytes(8)
    line = _field(2, b"tf_XLAEigen/1") + fixed64 + events
    plane = _field(2, b"/host:CPU") + entries + _field(3, line)
    return _field(1, plane)


def test_event_times_sum_durations_and_counts_by_name():
    durations, counts = profile_step.event_times(_xspace())
    assert durations == {"fusion.3": 12, "dot.1": 11}
    assert counts == {"fusion.3": 2, "dot.1": 1}


def test_source_lines_take_the_innermost_mixvi_frame_or_else_the_innermost():
    """fusion.3 comes from jax's numpy code called at estimators.py:161 (frame 3 -> its parent 4); dot.1 from
    the model's file alone (frame 2, whose parent is not listed)."""
    hlo = "\n".join([
        '%fusion.3 = f32[2]{0} fusion(%p), kind=kLoop, metadata={op_name="x" stack_frame_id=3}',
        '%dot.1 = f32[2]{0} dot(%a, %b), metadata={op_name="y" stack_frame_id=2}',
        "",
        "FileNames",
        '1 "/site/jax/_src/numpy.py"',
        '2 "/repo/mixvi/estimators.py"',
        '3 "/repo/benchmarks/targets/logistic.py"',
        "",
        "FunctionNames",
        '1 "dot"',
        '2 "mixture_terms"',
        '3 "logistic_regression"',
        "",
        "FileLocations",
        "1 {file_name_id=1 function_name_id=1 line=10}",
        "2 {file_name_id=2 function_name_id=2 line=161}",
        "3 {file_name_id=3 function_name_id=3 line=40}",
        "",
        "StackFrames",
        "2 {file_location_id=3 parent_frame_id=5}",
        "3 {file_location_id=1 parent_frame_id=4}",
        "4 {file_location_id=2 parent_frame_id=0}",
        "",
    ])
    where = profile_step.source_lines(hlo)
    assert where == {"fusion.3": "estimators.py:161(mixture_terms)", "dot.1": "logistic.py:40(logistic_regression)"}


@pytest.mark.slow  # a benchmark smoke run (~10-35 s on 2 cores)
def test_a_traced_loop_is_attributed_to_the_package_and_the_model():
    report = profile_step.profile("logistic", 20, 2, "isotropic", steps=4, runs=1)
    assert report["steps"] == 4 and report["ops"]
    assert all(o["us_per_step"] >= 0 and o["thunks_per_step"] > 0 for o in report["ops"])
    sources = {s["source"].split(":")[0] for s in report["sources"]}
    assert "estimators.py" in sources and "logistic.py" in sources
    total = sum(s["us_per_step"] for s in report["sources"])
    assert total == pytest.approx(sum(o["us_per_step"] for o in report["ops"]))
    assert "thunks per step" in profile_step.format_report(report, 5)
