"""Make docs/images/simulated_pair.png: a simulated confocal / STED pair of axonal actin.

Run: python docs/make_simulated_pair.py  (deterministic: fixed seed and region)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from stedloop.driver import AcquireRequest
from stedloop.drivers.simulator import SimulatorDriver, SimulatorOptions
from stedloop.frame import Region
from stedloop.params import ImagingParams

OUT = Path(__file__).resolve().parent / "images" / "simulated_pair.png"
PARAMS = ImagingParams(dwell_time_us=10.0, excitation_uw=5.0, depletion_mw=150.0)


def main() -> None:
    driver = SimulatorDriver(SimulatorOptions(structure="actin", seed=2, sample_fields=4))
    driver.connect()
    frame = driver.acquire(AcquireRequest(PARAMS, Region(4.48, 4.48, 224, 224)))
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3), dpi=90)
    field_um = frame.shape[1] * frame.pixel_size_nm / 1000
    panels = (
        ("confocal", frame.confocal_before),
        (
            f"STED ({PARAMS.depletion_mw:g} mW, FWHM ≈ {frame.metadata['effective_fwhm_nm']:.0f} nm)",
            frame.sted,
        ),
    )
    for ax, (title, image) in zip(axes, panels, strict=True):
        ax.imshow(
            image,
            cmap="hot",
            vmin=0,
            vmax=float(image.max()) * 0.8,
            extent=(0, field_um, field_um, 0),
        )
        ax.set_title(title, fontsize=11)
        ax.plot([0.3, 1.3], [field_um - 0.3] * 2, color="white", linewidth=3)  # 1 µm scale bar
        ax.text(0.8, field_um - 0.45, "1 µm", color="white", ha="center", fontsize=9)
        ax.set_axis_off()
    fig.suptitle(
        f"Simulated axonal actin, {PARAMS.dwell_time_us:g} µs dwell, {PARAMS.excitation_uw:g} µW excitation",
        fontsize=11,
    )
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
