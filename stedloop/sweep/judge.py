"""What a simulated session is judged by: the frame objectives, the simulated samples, and
the expected value of a proposal (the mean objective over fixed fresh reference regions).

Every value here is a pure function of its inputs (seeded simulator, seeded regions), so a
job gives the same numbers in any process: in-process, or as a Ray task on another machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Literal, cast, get_args

import numpy as np
from scipy import ndimage

from stedloop.driver import AcquireRequest
from stedloop.drivers.simulator import SimulatorDriver
from stedloop.drivers.simulator.driver import SimulatorOptions
from stedloop.frame import Frame
from stedloop.objectives.base import Objective
from stedloop.objectives.bleaching import BleachingObjective
from stedloop.objectives.quality import QualityObjective
from stedloop.objectives.scalarise import Scalariser
from stedloop.params import ImagingParams, ParamRange, ParamSpace, SafetyCaps
from stedloop.quality.synth import frame_expert_measures
from stedloop.session.regions import RegionTiler

if TYPE_CHECKING:
    from stedloop.quality.scorer import CNNScorer
    from stedloop.quality.scorer_protocol import Scorer

CAPS = SafetyCaps()
BOX = ParamSpace()
FIELD_PX = 224
IDEAL_FWHM_NM = 40.0
#: Seeds of the reference samples every proposal is judged on (far from session seeds).
REFERENCE_SEED = 10_000
SERIES_FRAMES = 10

#: The simulator's sample structures a sweep may use.
Sample = Literal["actin", "tubulin", "puncta", "beads"]
SAMPLES: tuple[str, ...] = get_args(Sample)
#: The search spaces a sweep may use: the default box, or the Durand et al. grid.
SpaceName = Literal["box", "durand"]


def durand_space() -> ParamSpace:
    """Durand et al. 2018: dwell 10-100 µs x 12, excitation 1-40 % x 12, depletion 10-60 % x 10
    (1,440 points). Percentages mapped onto this box's maxima: 20 µW and 350 mW."""
    dwell = tuple(float(v) for v in np.round(np.linspace(10, 100, 12), 6))
    excitation = tuple(float(v) for v in np.round(np.linspace(0.01, 0.4, 12) * 20.0, 6))
    depletion = tuple(float(v) for v in np.round(np.linspace(0.1, 0.6, 10) * 350.0, 6))
    return ParamSpace(
        dwell_time_us=ParamRange(min=dwell[0], max=dwell[-1], grid=dwell),
        excitation_uw=ParamRange(min=excitation[0], max=excitation[-1], grid=excitation),
        depletion_mw=ParamRange(min=depletion[0], max=depletion[-1], grid=depletion),
    )


def search_space(name: SpaceName) -> ParamSpace:
    return durand_space() if name == "durand" else BOX


def fidelity_survival(frame: Frame) -> float:
    truth = ndimage.gaussian_filter(
        np.asarray(frame.metadata["ground_truth"], float),
        IDEAL_FWHM_NM / frame.pixel_size_nm / 2.3548,
    )
    sted = np.asarray(frame.sted, float)
    if sted.std() == 0:
        return 0.0
    fidelity = float(np.corrcoef(sted.ravel(), truth.ravel())[0, 1])
    return max(0.0, fidelity) * float(frame.metadata["surviving_fraction"])


def expert_score(frame: Frame) -> float:
    """The synthetic expert's noise-free score (the quality network's training target)."""
    return float(frame_expert_measures(frame)["true_score"])


def expert_series_score(frame: Frame) -> float:
    """A ten-frame time series: the expert's score x (1 - bleaching)^9, as a session computes
    it with objectives quality + bleaching, scalarisation "product", weights {bleaching = 9}."""
    values = {"quality": expert_score(frame), "bleaching": BleachingObjective().evaluate(frame)}
    return float(_series_scalariser().combine(values))


@cache
def _series_scalariser() -> Scalariser:
    return Scalariser(
        # The quality objective's declaration; its value comes from the synthetic expert.
        [
            cast(Objective, QualityObjective(scorer=cast("Scorer", None))),
            cast(Objective, BleachingObjective()),
        ],
        {"bleaching": SERIES_FRAMES - 1},
        method="product",
    )


@cache
def _cnn_scorer() -> CNNScorer:
    import torch

    from stedloop.quality.scorer import CNNScorer

    torch.set_num_threads(1)  # a shared machine: one core for the network
    return CNNScorer.from_checkpoint(None, device="cpu", batch_size=1)


def cnn_score(frame: Frame) -> float:
    """The shipped quality network's score of the STED image (the session's default)."""
    return float(_cnn_scorer().score([np.asarray(frame.sted)])[0])


FrameObjective = Callable[[Frame], float]
OBJECTIVES: dict[str, tuple[FrameObjective, str]] = {
    "expert": (
        expert_score,
        "synthetic expert's noise-free score (fidelity, resolution gain, SNR, bleaching; "
        "the quality CNN's training target)",
    ),
    "fidelity-survival": (
        fidelity_survival,
        f"fidelity (corr. with ground truth at {IDEAL_FWHM_NM:g} nm) x fluorophore survival",
    ),
    "cnn": (cnn_score, "the shipped quality CNN's score of the STED image"),
    "expert-series": (
        expert_series_score,
        f"a {SERIES_FRAMES}-frame series: the synthetic expert's noise-free score x "
        f"(1 - bleaching)^{SERIES_FRAMES - 1} (session: quality + bleaching, product scalarisation)",
    ),
}
ObjectiveName = Literal["expert", "fidelity-survival", "cnn", "expert-series"]

#: The session's scalarisation behind an objective, where it is not a single objective.
SCALARISATION = {"expert-series": "product"}


def simulator(seed: int, fields: int, structure: str = "actin", **sample: float) -> SimulatorDriver:
    """A connected simulator of ``fields`` x ``fields`` fields with the ground truth;
    ``sample``: further ``SimulatorOptions`` of the sample (e.g. empty_area_fraction)."""
    options = SimulatorOptions(
        structure=structure,  # type: ignore[arg-type]  # checked by SimulatorOptions
        seed=seed,
        sample_fields=fields,
        field_px=FIELD_PX,
        include_ground_truth=True,
        **sample,  # type: ignore[arg-type]  # checked by SimulatorOptions
    )
    driver = SimulatorDriver(options, CAPS)
    driver.connect()
    return driver


class ExpectedObjective:
    """Mean objective over fixed fresh reference regions (the same for every point)."""

    def __init__(self, reps: int, objective: FrameObjective, structure: str = "actin") -> None:
        self.reps = reps
        self.objective = objective
        self.structure = structure
        self.evaluations = 0

    @cache  # noqa: B019 - one instance per run (or per worker process), points repeat
    def __call__(self, params: ImagingParams) -> float:
        values = []
        for r in range(self.reps):
            driver = simulator(REFERENCE_SEED + r, 1, self.structure)
            region = RegionTiler(driver.describe()).take()
            values.append(self.objective(driver.acquire(AcquireRequest(params, region))))
        self.evaluations += 1
        return float(np.mean(values))


@cache
def shared_judge(objective: str, sample: str, reps: int) -> ExpectedObjective:
    """One judge per (objective, sample, reps) in this process, so jobs that run in the same
    process (the sequential engine, or one Ray worker) share its cache of judged points.
    Judged values are pure, so sharing changes the time, never a number."""
    return ExpectedObjective(reps, OBJECTIVES[objective][0], sample)


def dense_grid(shape: Sequence[int]) -> list[ImagingParams]:
    """The allowed points of a dwell (log-spaced) x excitation x depletion grid of the box."""
    dwell = np.geomspace(BOX.dwell_time_us.min, BOX.dwell_time_us.max, shape[0])
    excitation = np.linspace(BOX.excitation_uw.min, BOX.excitation_uw.max, shape[1])
    depletion = np.linspace(BOX.depletion_mw.min, BOX.depletion_mw.max, shape[2])
    points = [ImagingParams(d, e, p) for d in dwell for e in excitation for p in depletion]
    return [p for p in points if CAPS.allows(p)]
