"""`stedloop doctor --acquire`: one test frame through the configured driver and objectives.

The frame is taken where a new session would take its first one: the optimizer's first
proposal (inside the parameter space and the caps) on the first region of the sample. It
is kept nowhere. Every configured objective then scores it, so a driver whose frames no
objective can judge (e.g. 64 px fields under the quality network's 224 px input) is found
before a session runs on it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from stedloop.config.schema import StedloopConfig
from stedloop.frame import Frame


class AcquireCheckFailed(Exception):
    """The test frame could not be taken; ``fix`` says what to do."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.fix = fix


@dataclass(frozen=True)
class ObjectiveResult:
    name: str
    value: float | None
    error: str | None


def first_params(config: StedloopConfig) -> Any:
    """The optimizer's first proposal for a new session (deterministic for a fixed seed)."""
    from stedloop.optimize import BayesianOptimizer, SearchSpace, resolve_score_transform

    settings = resolve_score_transform(config.optimizer, config.objectives.scalarisation)
    seed = config.optimizer.random_seed if config.optimizer.random_seed is not None else 0
    space = SearchSpace(config.params, config.safety)
    return BayesianOptimizer(space, settings, int(seed)).ask(0).params


def take_test_frame(config: StedloopConfig, timeout_s: float) -> Frame:
    """Connect, acquire one frame, go safe, close; in a thread so a hung driver is reported."""
    from stedloop.driver import AcquireRequest
    from stedloop.drivers import create_driver
    from stedloop.instrument import InstrumentBusy, claim_instrument
    from stedloop.session.regions import RegionTiler

    try:
        claim = claim_instrument(config, "`stedloop doctor --acquire`")
    except InstrumentBusy as exc:
        raise AcquireCheckFailed(
            f"no test frame: {exc}", "stop the session or daemon using it, then run again"
        ) from None
    outcome: dict[str, Any] = {}
    try:
        driver = create_driver(config)
        params = first_params(config)
    except BaseException:
        claim.release()
        raise

    def acquire() -> None:
        try:
            driver.connect()
            description = driver.describe()
            region = RegionTiler(description).take()
            outcome["frame"] = driver.acquire(AcquireRequest(params, region))
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            try:
                driver.safe_state()
                driver.close()
            except Exception as exc:
                outcome.setdefault("error", exc)

    try:
        worker = threading.Thread(target=acquire, name="doctor-acquire", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            raise AcquireCheckFailed(
                f"driver {config.driver.name!r} took no frame within {timeout_s:g} s",
                "raise --timeout if one frame takes longer; else check the instrument",
            )
    finally:
        claim.release()
    error = outcome.get("error")
    if error is not None:
        raise AcquireCheckFailed(
            f"the test frame at {params.describe()} failed: {type(error).__name__}: {error}",
            f"check [drivers.{config.driver.name}] and the instrument; the driver contract is "
            "in docs/plugins.md",
        )
    frame: Frame = outcome["frame"]
    return frame


def score_test_frame(config: StedloopConfig, frame: Frame) -> list[ObjectiveResult]:
    """Each configured objective's value for ``frame``, or why it cannot score it."""
    from stedloop.objectives import build_objectives

    results = []
    for objective in build_objectives(config):
        try:
            value = float(objective.evaluate(frame))
        except Exception as exc:
            results.append(ObjectiveResult(objective.name, None, f"{type(exc).__name__}: {exc}"))
            continue
        if math.isfinite(value):
            results.append(ObjectiveResult(objective.name, value, None))
        else:
            results.append(ObjectiveResult(objective.name, None, f"not a finite number ({value})"))
    return results
