"""The worker's wire format and watchdog rules, without processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stedloop import errors
from stedloop.config.schema import WorkerSection
from stedloop.frame import Frame, Region
from stedloop.params import ImagingParams
from stedloop.worker import protocol
from stedloop.worker.watchdog import Observation, Watchdog, backoff_delays


def _frame(**metadata: object) -> Frame:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 4000, (6, 5), dtype=np.uint16) for _ in range(3)]
    return Frame(
        *images,
        params=ImagingParams(10.0, 5.0, 100.0),
        region=Region(0.25, 1.5, 5, 6),
        pixel_size_nm=20.0,
        started_at_s=1.5,
        finished_at_s=2.25,
        metadata=dict(metadata),
    )


def _over_the_wire(frame: Frame) -> Frame:
    header, buffers = protocol.encode_frame(frame)
    wire_header = protocol.decode_header(protocol.encode_header({"type": "reply", **header}))
    return protocol.decode_frame(wire_header, [memoryview(b.tobytes()) for b in buffers])


def test_frame_round_trip_keeps_images_params_and_metadata() -> None:
    truth = np.linspace(0, 1, 30, dtype=np.float32).reshape(6, 5)
    frame = _frame(
        structure="actin", frame_index=np.int64(3), ground_truth=truth, fwhm=np.float32(90.5)
    )
    back = _over_the_wire(frame)
    for name in ("confocal_before", "sted", "confocal_after"):
        assert np.array_equal(getattr(back, name), getattr(frame, name))
        assert getattr(back, name).dtype == np.uint16
    assert back.params == frame.params and back.region == frame.region
    assert (back.started_at_s, back.finished_at_s, back.pixel_size_nm) == (1.5, 2.25, 20.0)
    assert back.metadata["frame_index"] == 3 and back.metadata["structure"] == "actin"
    assert back.metadata["fwhm"] == 90.5
    assert back.metadata["ground_truth"].dtype == np.float32
    assert np.array_equal(back.metadata["ground_truth"], truth)


def test_received_arrays_are_read_only_views() -> None:
    back = _over_the_wire(_frame())
    with pytest.raises(ValueError):
        back.sted[0, 0] = 1


def test_object_arrays_and_unserialisable_metadata_are_refused() -> None:
    with pytest.raises(errors.DriverError, match="cannot be sent"):
        protocol.encode_frame(_frame(handle=object()))
    with pytest.raises(errors.DriverError, match="dtype object"):
        protocol.encode_frame(_frame(bad=np.array([object()], dtype=object)))


def test_decoding_refuses_object_dtype_and_wrong_sizes() -> None:
    header, buffers = protocol.encode_frame(_frame())
    raw = [b.tobytes() for b in buffers]
    evil = {**header, "images": [{"dtype": "|O", "shape": [6, 5]}, *header["images"][1:]]}
    with pytest.raises(protocol.ProtocolError, match="not allowed"):
        protocol.decode_frame(evil, raw)
    with pytest.raises(protocol.ProtocolError, match="bytes"):
        protocol.decode_frame(header, [raw[0][:-2], *raw[1:]])
    with pytest.raises(protocol.ProtocolError, match="buffers"):
        protocol.decode_frame(header, raw[:2])


@pytest.mark.parametrize(
    "exc",
    [
        errors.DriverError("boom"),
        errors.DriverDisconnected("gone"),
        errors.RegionError("outside"),
        errors.ParameterRejected("no"),
        errors.SafetyCapExceeded("refused: depletion"),
        errors.AcquisitionAborted("stop"),
        errors.ConfigError("bad key"),
    ],
)
def test_stedloop_errors_keep_type_and_message(exc: Exception) -> None:
    back = protocol.error_from_dict(protocol.error_to_dict(exc))
    assert type(back) is type(exc) and str(back) == str(exc)


def test_foreign_errors_arrive_as_driver_error_and_subclasses_as_nearest_type() -> None:
    back = protocol.error_from_dict(protocol.error_to_dict(ZeroDivisionError("division by zero")))
    assert type(back) is errors.DriverError and "ZeroDivisionError" in str(back)

    class LabDisconnect(errors.DriverDisconnected):
        pass

    back = protocol.error_from_dict(protocol.error_to_dict(LabDisconnect("cable")))
    assert type(back) is errors.DriverDisconnected and str(back) == "cable"


def test_bad_headers_are_protocol_errors() -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_header(b"\xff\xfe")
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_header(b"[1, 2]")


SETTINGS = WorkerSection(
    heartbeat_interval_s=0.5,
    heartbeat_timeout_s=5.0,
    abort_grace_period_s=2.0,
    acquire_timeout_s=60.0,
    call_timeout_s=10.0,
)


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        (Observation(pid=1, exit_code=None, heartbeat_age_s=0.4), None),
        (Observation(pid=1, exit_code=3, heartbeat_age_s=0.1), ("worker_crashed", "exited")),
        (
            Observation(pid=1, exit_code=None, heartbeat_age_s=5.1),
            ("worker_hung", "heartbeat_silence"),
        ),
        (
            Observation(1, None, 0.1, call_method="acquire", call_age_s=30, abort_age_s=1.9),
            None,
        ),
        (
            Observation(1, None, 0.1, call_method="acquire", call_age_s=30, abort_age_s=2.1),
            ("worker_hung", "abort_not_honoured"),
        ),
        (
            Observation(1, None, 0.1, call_method="acquire", call_age_s=61),
            ("worker_hung", "call_timeout"),
        ),
        (
            Observation(1, None, 0.1, call_method="connect", call_age_s=11),
            ("worker_hung", "call_timeout"),
        ),
        (Observation(1, None, 0.1, call_method="acquire", call_age_s=11), None),
    ],
)
def test_watchdog_rules(seen: Observation, expected: tuple[str, str] | None) -> None:
    fault = Watchdog(SETTINGS).check(seen)
    if expected is None:
        assert fault is None
    else:
        assert fault is not None and (fault.kind, fault.reason) == expected
        assert str(seen.pid) in fault.message


def test_backoff_first_attempt_at_once_then_doubles_to_the_cap() -> None:
    settings = WorkerSection(restart_max_attempts=6, restart_backoff_s=0.5, restart_backoff_max_s=3)
    assert list(backoff_delays(settings)) == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_heartbeat_timeout_must_exceed_two_intervals() -> None:
    with pytest.raises(ValueError, match="twice"):
        WorkerSection(heartbeat_interval_s=1.0, heartbeat_timeout_s=1.5)


def test_the_worker_forwards_every_method_of_the_driver_protocol() -> None:
    """A method added to the Driver protocol must cross the worker boundary too (raw output
    once did not: it was found by getattr, outside the protocol)."""
    from stedloop.driver import Driver, OverviewDriver
    from stedloop.worker.client import WorkerDriver

    methods = {
        n
        for protocol_class in (Driver, OverviewDriver)  # the protocol and its optional abilities
        for n, v in vars(protocol_class).items()
        if callable(v) and not n.startswith("_")
    }
    assert methods == {
        "connect",
        "describe",
        "acquire",
        "acquire_overview",
        "request_abort",
        "safe_state",
        "close",
    }
    calls = set(protocol.CALL_METHODS) - {"init"}
    assert methods == calls | {"request_abort"}  # an abort is its own message ("abort")
    assert all(callable(getattr(WorkerDriver, name)) for name in methods)


@pytest.mark.parametrize("raw", [None, ("frames", "0007")])
def test_an_acquire_request_crosses_whole(raw: tuple[str, str] | None, tmp_path: Path) -> None:
    import json

    from stedloop.driver import AcquireRequest, RawOutput

    raw_output = RawOutput(tmp_path / raw[0], raw[1]) if raw else None
    request = AcquireRequest(ImagingParams(10.0, 5.0, 80.0), Region(1.5, 0.0, 64, 64), raw_output)
    wire = json.loads(protocol.encode_header({"type": "call", "args": request.as_dict()}))
    assert AcquireRequest.from_dict(wire["args"]) == request
