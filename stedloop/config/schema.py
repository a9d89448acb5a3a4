"""The configuration schema: every section, every field with its unit in its name.

Each section belongs to one part of stedloop; a part adds its fields to its own section.
Driver options are not here: ``[drivers.<name>]`` tables are validated by the driver's own
``Options`` model when that driver is loaded, so plugins can bring their own settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stedloop.errors import SafetyCapExceeded
from stedloop.params import ImagingParams, ParamSpace, SafetyCaps

#: The sections that belong to one session rather than to the site: a daemon client may
#: override them, and a resumed session takes them from its ledger. Everything else (safety
#: caps, driver, worker, store, daemon, quality model, logging) is the site's, read from the
#: site configuration at the moment of use and never from a request or a ledger.
SESSION_SECTIONS: tuple[str, ...] = ("params", "objectives", "optimizer", "session")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DriverSection(Section):
    name: str = Field(
        "simulator", description="Driver plugin name (entry point in stedloop.drivers)."
    )
    in_worker: bool = Field(
        False, description="Run the driver in its own worker process (see [worker])."
    )


class QualitySection(Section):
    model_path: Path | None = Field(
        None, description="Quality-network checkpoint; empty means the shipped model."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the network runs; auto picks CUDA when present."
    )
    batch_size: int = Field(16, ge=1, le=4096, description="Frames per scoring batch.")
    cpu_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="CPU threads for scoring in the daemon; 0 = all cores but one, so the "
        "request loop always has a core.",
    )
    endpoint: str | None = Field(
        None,
        description="URL of a scoring service (`stedloop scoring serve`), e.g. "
        "http://gpu-server:8470/score; empty scores here with model_path.",
    )
    token_env: str | None = Field(
        None,
        description="Environment variable holding the scoring service's token (never the "
        "token itself: the configuration is recorded in every session's ledger).",
    )
    token_file: Path | None = Field(
        None, description="File holding the scoring service's token (one line; mode 0600)."
    )
    fallback: Literal["local", "pause"] = Field(
        "pause",
        description="When the scoring service is unreachable: `local` scores here with "
        "model_path (the same model file), `pause` pauses the session with a message.",
    )
    timeout_s: float = Field(
        10.0, gt=0, le=600, description="Scoring service: longest wait for one frame's score."
    )
    connect_timeout_s: float = Field(
        2.0, gt=0, le=60, description="Scoring service: longest wait for a connection."
    )

    @model_validator(mode="after")
    def _one_token_source(self) -> QualitySection:
        if self.token_env is not None and self.token_file is not None:
            raise ValueError("set quality.token_env or quality.token_file, not both")
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(
                f"quality.endpoint must be an http:// or https:// URL, got {self.endpoint!r}"
            )
        return self


class ObjectivesSection(Section):
    names: tuple[str, ...] = Field(
        ("quality",),
        min_length=1,
        description="Objective plugins (stedloop.objectives) to evaluate.",
    )
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="Scalarisation weight per objective name; missing names weigh 1.",
    )
    scalarisation: Literal["weighted_sum", "chebyshev", "product"] = Field(
        "weighted_sum", description="How several objectives become the one the optimizer sees."
    )
    bounds: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Normalisation range (worst/best ends by direction) per objective name, "
        "in its unit; missing names use the objective's own bounds.",
    )


class OptimizerSection(Section):
    n_initial_points: int = Field(5, ge=1, le=100, description="Space-filling warm-up frames.")
    initial_design: Literal["lhs", "sobol", "halton", "random"] = Field(
        "lhs", description="Design of the warm-up points."
    )
    acquisition: Literal["EI", "PI", "LCB", "gp_hedge"] = Field(
        "EI", description="Acquisition function of the Gaussian-process surrogate."
    )
    random_seed: int | None = Field(None, description="Seed for reproducible proposals.")
    n_candidates: int = Field(
        2000,
        ge=10,
        le=1_000_000,
        description="Sampled points over which the acquisition is maximised per proposal.",
    )
    refit_every: int = Field(
        5,
        ge=1,
        le=1000,
        description="Re-optimise the GP's hyper-parameters every this many observations "
        "(in between, the GP is refitted with the last ones: much faster decisions).",
    )
    hyperparameter_restarts: int = Field(
        2, ge=0, le=50, description="Random restarts of each hyper-parameter optimisation."
    )
    score_transform: Literal["auto", "none", "log"] = Field(
        "none",
        description="What the surrogate models: the combined score (none) or its log, floored "
        "at 0.01 (log). auto: log with the product scalarisation, none otherwise.",
    )
    surrogate_inputs: Literal["light-dose", "parameters"] = Field(
        "light-dose",
        description="The Gaussian process's coordinates. light-dose: excitation enters as the "
        "excitation energy per pixel (dwell time x power, log scale), which signal and "
        "bleaching follow, so the ridge of equal dose becomes one axis; parameters: the three "
        "parameters as configured.",
    )
    xi: float = Field(
        0.05, ge=0, description="Exploration margin of EI and PI, in units of the modelled score."
    )
    kappa: float = Field(1.96, ge=0, description="Exploration weight of LCB.")
    max_model_points: int = Field(
        200,
        ge=0,
        le=100_000,
        description="Observations the GP is fitted on at most: past this many, a subset of the "
        "most recent, the best and a space-filling rest (decisions stay fast with a long "
        "history); past 50 observations the hyper-parameters are re-optimised on at most 100 "
        "of them, starting from the last ones. 0: every observation in every fit (slow past "
        "~100).",
    )
    policy: Literal["explore", "exploit-after-plateau"] = Field(
        "explore",
        description="explore: every proposal maximises the acquisition. exploit-after-plateau: "
        "once the last plateau_frames frames found nothing the model rates better than the best "
        "before them, propose the settings the model is surest are good (near the best) instead, "
        "so the frames after the search are images worth keeping.",
    )
    plateau_frames: int = Field(
        8,
        ge=1,
        le=1000,
        description="Frames without a better point (in the model's view) that make a plateau.",
    )

    @model_validator(mode="after")
    def _model_points_or_all(self) -> OptimizerSection:
        if 0 < self.max_model_points < 10:
            raise ValueError(
                f"optimizer.max_model_points ({self.max_model_points}) must be 0 (all "
                "observations) or at least 10"
            )
        return self


class OverviewSection(Section):
    """``[session.overview]``: pick regions from confocal overviews (issue 19, item 2)."""

    enabled: bool = Field(
        False,
        description="Pick regions from confocal overviews where the driver can take them "
        "(else the tiling).",
    )
    size_um: float = Field(
        40.0, gt=0, le=10_000, description="Edge of one overview's square area, µm."
    )
    pixel_size_nm: float = Field(
        100.0, gt=0, le=10_000, description="Overview pixel size, nm (coarse: fast, low dose)."
    )
    dwell_time_us: float = Field(5.0, gt=0, description="Overview pixel dwell time, µs.")
    excitation_uw: float = Field(
        5.0, ge=0, description="Overview excitation power, µW (depletion is off)."
    )
    foreground_fraction: tuple[float, float] = Field(
        (0.05, 0.8),
        description="Band (min, max) of a region's share of foreground pixels in the overview.",
    )
    structure_content: tuple[float, float] = Field(
        (0.15, 4.0),
        description="Band (min, max) of a region's structure brightness, relative to the "
        "overview's bright, well-labelled structure (1: its 90th percentile).",
    )
    threshold_sigma: float = Field(
        4.0, gt=0, le=100, description="Foreground: this many noise sigmas above background."
    )
    margin_um: float = Field(
        1.0, ge=0, le=1000, description="Distance kept from regions already exposed, µm."
    )
    max_overviews: int = Field(
        50, ge=1, le=10_000, description="Overviews a session may take before the tiling."
    )

    @model_validator(mode="after")
    def _bands(self) -> OverviewSection:
        low, high = self.foreground_fraction
        if not 0 <= low <= high <= 1:
            raise ValueError("foreground_fraction must be (min, max) with 0 <= min <= max <= 1")
        low, high = self.structure_content
        if not 0 <= low <= high:
            raise ValueError("structure_content must be (min, max) with 0 <= min <= max")
        return self

    def check_within_caps(self, caps: SafetyCaps) -> None:
        """The overview is an exposure like a frame: its settings must lie within the caps
        (checked when the config is read, and again before each overview is sent)."""
        problems = caps.violations(ImagingParams(self.dwell_time_us, self.excitation_uw, 0.0))
        if problems:
            raise SafetyCapExceeded("session.overview: " + "; ".join(problems))


class SessionSection(Section):
    budget_frames: int = Field(30, ge=1, le=100_000, description="Frames a session may take.")
    target_score: float | None = Field(
        None, description="Stop once the combined objective reaches this value."
    )
    driver_retries: int = Field(
        2, ge=0, le=20, description="Retries of a frame whose acquisition raised."
    )
    on_driver_failure: Literal["stop", "continue"] = Field(
        "stop", description="After retries are spent: stop the session, or skip that point."
    )
    retry_delay_s: float = Field(
        0.5, ge=0, le=600, description="Wait before retrying a frame whose acquisition raised."
    )
    region_gap_um: float = Field(
        0.0,
        ge=0,
        description="Empty margin between imaged regions (bleaching reaches past a field's edge).",
    )
    unbounded_columns: int = Field(
        10,
        ge=1,
        description="Regions per row when the driver reports no sample extent (a free stage).",
    )
    structure: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="What the sample shows (e.g. actin, tubulin): a label `--warm-start auto` "
        "matches earlier sessions by. Empty: the driver's own (the simulator's structure).",
    )
    overview: OverviewSection = Field(
        default_factory=OverviewSection,
        description="Regions picked from confocal overviews ([session.overview]).",
    )


class StoreSection(Section):
    data_dir: Path | None = Field(
        None,
        description="Where sessions are stored; empty means $STEDLOOP_HOME or the user data folder.",
    )


class DaemonSection(Section):
    request_address: str = Field(
        "tcp://127.0.0.1:5755", description="ZeroMQ ROUTER address for requests."
    )
    event_address: str = Field("tcp://127.0.0.1:5756", description="ZeroMQ PUB address for events.")
    max_message_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request accepted, in bytes."
    )
    keys_dir: Path | None = Field(
        None, description="CURVE key folder; required to bind anything but loopback."
    )
    curve: bool = Field(
        False,
        description="Require CURVE encryption and client keys even on loopback "
        "(always on for other addresses).",
    )
    shutdown_grace_s: float = Field(
        10.0,
        ge=0,
        description="On SIGTERM/SIGINT, wait this long for the frame in flight, then abort it.",
    )
    reply_cache_size: int = Field(
        1024, ge=16, le=1_000_000, description="Replies kept for repeated request ids."
    )
    event_buffer_size: int = Field(
        10_000, ge=100, le=10_000_000, description="Events kept for events.since catch-up."
    )


class WorkerSection(Section):
    python_executable: Path | None = Field(
        None, description="Interpreter for the driver worker; empty means this one."
    )
    heartbeat_interval_s: float = Field(0.5, gt=0, description="Worker heartbeat period.")
    heartbeat_timeout_s: float = Field(
        5.0, gt=0, description="Silence before a worker is declared hung."
    )
    abort_grace_period_s: float = Field(
        2.0, gt=0, description="Wait for an abort to be honoured before killing the worker."
    )
    transport: Literal["auto", "ipc", "tcp"] = Field(
        "auto",
        description="Socket to the worker: ipc (POSIX), tcp on 127.0.0.1, or auto (ipc where "
        "available, else tcp).",
    )
    acquire_timeout_s: float = Field(
        600.0, gt=0, description="Longest a frame may take before the worker counts as hung."
    )
    call_timeout_s: float = Field(
        30.0, gt=0, description="Longest connect/describe/safe_state/close may take."
    )
    start_timeout_s: float = Field(
        30.0, gt=0, description="Longest a worker may take to start and load the driver."
    )
    restart_max_attempts: int = Field(
        5, ge=1, le=100, description="Start attempts after a fault before giving up."
    )
    restart_backoff_s: float = Field(
        0.5, ge=0, description="Delay before the second start attempt; doubles after each."
    )
    restart_backoff_max_s: float = Field(
        10.0, ge=0, description="Longest delay between start attempts."
    )
    standby: bool = Field(
        True,
        description="Keep a started spare worker (driver loaded, not connected) so a killed "
        "worker is replaced, and the lasers made safe, without waiting for a start.",
    )
    standby_connected: bool = Field(
        False,
        description="Also connect the spare's driver in advance: the lasers are made safe "
        "without waiting for a connect, at the price of a second open instrument connection.",
    )

    @model_validator(mode="after")
    def _timeout_after_interval(self) -> WorkerSection:
        if self.heartbeat_timeout_s <= 2 * self.heartbeat_interval_s:
            raise ValueError(
                f"worker.heartbeat_timeout_s ({self.heartbeat_timeout_s:g}) must be more than "
                f"twice worker.heartbeat_interval_s ({self.heartbeat_interval_s:g})"
            )
        return self


class LoggingSection(Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    json_file: Path | None = Field(None, description="Also write JSON log lines to this file.")


class StedloopConfig(BaseModel):
    """All of stedloop's settings. TOML tables map onto these sections."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    driver: DriverSection = DriverSection()
    drivers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-driver options, validated by the driver."
    )
    params: ParamSpace = ParamSpace()
    safety: SafetyCaps = SafetyCaps()
    quality: QualitySection = QualitySection()
    objectives: ObjectivesSection = ObjectivesSection()
    optimizer: OptimizerSection = OptimizerSection()
    session: SessionSection = SessionSection()
    store: StoreSection = StoreSection()
    daemon: DaemonSection = DaemonSection()
    worker: WorkerSection = WorkerSection()
    logging: LoggingSection = LoggingSection()

    @model_validator(mode="after")
    def _ranges_within_caps(self) -> StedloopConfig:
        # Caps are enforced at config time too: a range reaching past a cap is an error.
        self.params.check_within_caps(self.safety)
        self.session.overview.check_within_caps(self.safety)
        return self

    def driver_options(self) -> dict[str, Any]:
        """The ``[drivers.<name>]`` table of the configured driver (may be empty)."""
        return dict(self.drivers.get(self.driver.name, {}))
