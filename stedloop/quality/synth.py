"""Labelled training data from the simulator, scored by a documented "synthetic expert".

The paper's 1,140 expert-labelled frames are not public, so we generate frames with
:class:`stedloop.drivers.simulator.SimulatorDriver` and label them with a formula that
looks at what an expert judges (resolution of the structure, signal to noise, bleaching)
using facts an expert never has but the simulator does (the ground truth, the effective PSF):

- fidelity ``F``: Pearson correlation ``rho`` of the STED image with the ground truth
  blurred to an ideal 40 nm resolution, mapped ``F = clip((rho - 0.40) / 0.45, 0, 1)``;
- resolution gain ``R = clip((d_conf - d_eff) / (d_conf - 60 nm), 0, 1)`` from the
  effective and confocal FWHM (60 nm resolves the ~190 nm actin rings and 25 nm tubulin
  filaments well);
- signal to noise ``snr = (s - b) / sqrt(s + b + 1)`` with ``s`` the mean counts on the
  brightest 10 % of the ideal image and ``b`` on its dimmest half; ``N = 1 - exp(-snr / 3)``;
- bleaching ``B = clip((1 - surviving_fraction) / 0.7, 0, 1)`` over the frame.

``true_score = F^0.6 * (0.35 + 0.65 R^0.6) * N^0.5 * (1 - 0.3 B)`` and the label is
``clip(true_score + e, 0, 1)`` with expert noise ``e ~ Normal(0, 0.04)``.

Parameters are drawn log-uniformly within the configured parameter space (depletion: 10 %
of frames at its minimum, i.e. confocal-like when that is 0, the rest log-uniform from
max(min, 1 mW)), redrawn until inside the safety caps (never clipped). Every frame is
taken on a fresh field; fields holding less than half the sample's median fluorophore
density are skipped (an expert images structure, not empty glass).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from stedloop.driver import AcquireRequest
from stedloop.errors import DataError
from stedloop.frame import Frame
from stedloop.params import ImagingParams, ParamSpace, SafetyCaps

IDEAL_FWHM_NM = 40.0
GOOD_FWHM_NM = 60.0
EXPERT_NOISE_SD = 0.04
SAMPLE_FIELDS = 8
STRUCTURES = ("actin", "tubulin")


def frame_expert_measures(frame: Frame) -> dict[str, float]:
    """``expert_measures`` of a simulator frame, from the ground truth and optics it carries
    in its metadata."""
    meta = frame.metadata
    return expert_measures(
        np.asarray(frame.sted),
        np.asarray(meta["ground_truth"]),
        frame.pixel_size_nm,
        float(meta["effective_fwhm_nm"]),
        float(meta["confocal_fwhm_nm"]),
        float(meta["surviving_fraction"]),
    )


def expert_measures(
    sted: np.ndarray,
    ground_truth: np.ndarray,
    pixel_size_nm: float,
    effective_fwhm_nm: float,
    confocal_fwhm_nm: float,
    surviving_fraction: float,
) -> dict[str, float]:
    """The synthetic expert's ingredients and its noiseless score (see module docstring)."""
    image = sted.astype(np.float64)
    sigma_px = IDEAL_FWHM_NM / pixel_size_nm / (2 * math.sqrt(2 * math.log(2)))
    ideal = ndimage.gaussian_filter(ground_truth.astype(np.float64), sigma_px)
    if np.ptp(image) == 0 or np.ptp(ideal) == 0:
        rho = 0.0
    else:
        rho = float(np.corrcoef(image.ravel(), ideal.ravel())[0, 1])
    bright = ideal >= np.percentile(ideal, 90)
    dim = ideal <= np.percentile(ideal, 50)
    s, b = float(image[bright].mean()), float(image[dim].mean())
    snr = (s - b) / math.sqrt(s + b + 1.0)
    fidelity = float(np.clip((rho - 0.40) / 0.45, 0, 1))
    gain = float(
        np.clip((confocal_fwhm_nm - effective_fwhm_nm) / (confocal_fwhm_nm - GOOD_FWHM_NM), 0, 1)
    )
    photons = 1.0 - math.exp(-max(snr, 0.0) / 3.0)
    bleach = float(np.clip((1.0 - surviving_fraction) / 0.7, 0, 1))
    true_score = fidelity**0.6 * (0.35 + 0.65 * gain**0.6) * photons**0.5 * (1 - 0.3 * bleach)
    return {
        "rho": rho,
        "fidelity": fidelity,
        "resolution_gain": gain,
        "snr": snr,
        "photon_term": photons,
        "bleach": bleach,
        "true_score": float(np.clip(true_score, 0, 1)),
    }


def expert_label(true_score: float, rng: np.random.Generator) -> float:
    return float(np.clip(true_score + rng.normal(0.0, EXPERT_NOISE_SD), 0.0, 1.0))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def draw_params(rng: np.random.Generator, space: ParamSpace, caps: SafetyCaps) -> ImagingParams:
    """Log-uniform parameters inside ``space``, redrawn (never clipped) until within ``caps``."""
    for _ in range(10_000):
        values = {}
        for name, rng_spec in space.ranges():
            lo, hi = rng_spec.min, rng_spec.max
            if rng_spec.grid is not None:
                values[name] = float(rng.choice(rng_spec.grid))
            elif lo <= 0:
                # log-uniform needs lo > 0: 10 % exactly at the minimum, the rest from 1 unit
                floor = min(1.0, hi / 10)
                values[name] = lo if rng.random() < 0.1 else _log_uniform(rng, floor, hi)
            else:
                values[name] = _log_uniform(rng, lo, hi)
        params = ImagingParams.from_mapping(values)
        if caps.allows(params):
            return params
    raise DataError("could not draw parameters within the safety caps (is the space empty?)")


@dataclass(frozen=True)
class SynthPart:
    """One seeded part of a data set: ``n`` frames named from ``first_index``, drawn from the
    random stream ``seed_key``. Parts are independent, so they can run anywhere (a Ray task)
    and give the same files."""

    out: Path
    structure: str
    seed_key: tuple[int, ...]
    n: int
    first_index: int
    variants: int
    space: ParamSpace
    caps: SafetyCaps


@dataclass(frozen=True)
class PartResult:
    rows: list[dict[str, object]]
    samples: int


def plan_parts(
    out: Path,
    n: int,
    structure: str,
    seed: int,
    space: ParamSpace,
    caps: SafetyCaps,
    variants: int,
    shards: int = 1,
) -> list[SynthPart]:
    """``shards`` parts of (nearly) equal size. One part is the single random stream of a
    plain ``dataset synth``; with more, part k draws from its own stream ``(seed, 7, k)``, so
    the same ``shards`` gives the same files however the parts are run."""
    if not 1 <= shards <= n:
        raise DataError(f"--shards must be 1..--n ({n}), got {shards}")
    if shards == 1:
        return [SynthPart(out, structure, (seed, 7), n, 0, variants, space, caps)]
    base, extra = divmod(n, shards)
    parts, first = [], 0
    for k in range(shards):
        size = base + (1 if k < extra else 0)
        parts.append(SynthPart(out, structure, (seed, 7, k), size, first, variants, space, caps))
        first += size
    return parts


def synthesize(
    out: Path,
    n: int,
    structure: str = "actin",
    seed: int = 0,
    space: ParamSpace | None = None,
    caps: SafetyCaps | None = None,
    progress: Callable[[int], Any] | None = None,
    variants: int = 0,
    shards: int = 1,
    run_parts: Callable[[list[SynthPart]], list[PartResult]] | None = None,
) -> dict[str, Any]:
    """Write ``n`` labelled frames (16-bit TIFF STED images + manifest.csv) to ``out``, each
    followed by ``variants`` labelled variants of it (``variants.py``: starved, gain,
    structureless), so brightness and quality part ways in the data.

    ``shards`` splits the set into seeded parts (``plan_parts``); ``run_parts`` runs them
    (default: here, one after another), e.g. as Ray tasks."""
    from stedloop.quality.dataset import MANIFEST_NAME, write_manifest

    if structure not in STRUCTURES:
        raise DataError(f"unknown structure {structure!r}; expected one of {', '.join(STRUCTURES)}")
    if n < 1:
        raise DataError(f"--n must be at least 1, got {n}")
    if not 0 <= variants <= 20:
        raise DataError(f"--variants must be 0..20 per frame, got {variants}")
    out = Path(out)
    if (out / MANIFEST_NAME).exists():
        raise DataError(f"{out} already holds a data set ({MANIFEST_NAME}); choose a new folder")
    parts = plan_parts(
        out, n, structure, seed, space or ParamSpace(), caps or SafetyCaps(), variants, shards
    )
    out.mkdir(parents=True, exist_ok=True)
    if run_parts is not None:
        results = run_parts(parts)
    else:
        results = []
        for part in parts:
            offset = part.first_index
            tell = None if progress is None else (lambda done, o=offset: progress(o + done))
            results.append(synth_part(part, tell))
    rows = [row for result in results for row in result.rows]
    write_manifest(out, rows)
    originals = sum(part.n for part in parts)
    labels = np.array([float(r["score"]) for r in rows])  # type: ignore[arg-type]
    return {
        "out": str(out),
        "n": originals,
        "variants": len(rows) - originals,
        "structure": structure,
        "seed": seed,
        "shards": len(parts),
        "samples": sum(result.samples for result in results),
        "label_histogram": np.histogram(labels, bins=5, range=(0, 1))[0].tolist(),
        "label_mean": round(float(labels.mean()), 4),
    }


def synth_part(part: SynthPart, progress: Callable[[int], Any] | None = None) -> PartResult:
    """Make one part's frames (and variants) in ``part.out``; its manifest rows."""
    import tifffile

    from stedloop.drivers.simulator import SimulatorDriver, SimulatorOptions
    from stedloop.frame import Region
    from stedloop.quality.variants import make_variant, variant_row

    out, structure, n, variants = part.out, part.structure, part.n, part.variants
    space, caps = part.space, part.caps
    rng = np.random.default_rng(list(part.seed_key))
    rows: list[dict[str, object]] = []
    originals = 0
    sample_index = 0
    while originals < n:
        sample_seed = int(rng.integers(0, 2**31 - 1))
        opts = SimulatorOptions(
            structure=structure,  # type: ignore[arg-type]  # checked against STRUCTURES above
            seed=sample_seed,
            sample_fields=SAMPLE_FIELDS,
            include_ground_truth=True,
        )
        driver = SimulatorDriver(opts, caps=caps)
        driver.connect()
        try:
            field_um = opts.field_px * opts.pixel_size_nm / 1000
            regions = [
                Region(ix * field_um, iy * field_um, opts.field_px, opts.field_px)
                for iy in range(SAMPLE_FIELDS)
                for ix in range(SAMPLE_FIELDS)
            ]
            density = np.array([driver.fluorophore_map(r).mean() for r in regions])
            usable = [
                r for r, d in zip(regions, density, strict=True) if d >= 0.5 * np.median(density)
            ]
            for region in usable:
                if originals >= n:
                    break
                params = draw_params(rng, space, caps)
                frame = driver.acquire(AcquireRequest(params, region))
                meta = frame.metadata
                measures = frame_expert_measures(frame)
                label = expert_label(measures["true_score"], rng)
                name = f"{structure}_{part.first_index + originals:05d}.tif"
                tifffile.imwrite(out / name, frame.sted.astype(np.uint16))
                no_variant = {"variant": "", "parent": "", "photon_fraction": 1.0, "gain": 1.0}
                rows.append(
                    {
                        **(no_variant if variants else {}),
                        "path": name,
                        "score": round(label, 5),
                        "structure": structure,
                        **{k: round(v, 4) for k, v in params.as_dict().items()},
                        "true_score": round(measures["true_score"], 5),
                        "rho": round(measures["rho"], 4),
                        "snr": round(measures["snr"], 4),
                        "effective_fwhm_nm": meta["effective_fwhm_nm"],
                        "surviving_fraction": round(float(meta["surviving_fraction"]), 4),
                        "sample_seed": sample_seed,
                        "region_x_um": region.x_um,
                        "region_y_um": region.y_um,
                    }
                )
                expert_inputs = {
                    "pixel_size_nm": frame.pixel_size_nm,
                    "effective_fwhm_nm": float(meta["effective_fwhm_nm"]),
                    "confocal_fwhm_nm": float(meta["confocal_fwhm_nm"]),
                    "surviving_fraction": float(meta["surviving_fraction"]),
                }
                for j in range(variants):
                    variant = make_variant(
                        rng, frame.sted, meta["ground_truth"], expert_inputs, measures["true_score"]
                    )
                    variant_name = f"{structure}_{part.first_index + originals:05d}_v{j}.tif"
                    tifffile.imwrite(out / variant_name, variant.image)
                    # The parent's parameters and region; its own measures do not apply.
                    parent = {
                        k: v
                        for k, v in rows[-1].items()
                        if k not in ("path", "score", "rho", "snr", "true_score")
                    }
                    rows.append(
                        {
                            **parent,
                            "path": variant_name,
                            "score": round(variant.label, 5),
                            **variant_row(variant, name),
                        }
                    )
                originals += 1
                if progress is not None:
                    progress(originals)
        finally:
            driver.close()
        sample_index += 1
    return PartResult(rows, sample_index)
