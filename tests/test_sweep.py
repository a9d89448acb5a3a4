"""`stedloop sweep`: a grid of simulated sessions on a real local Ray gives the same table as
the same sweep run in-process (all but the decision-time columns); stedloop sweeps without
Ray installed; a bad sweep file is one line and exit code 2."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_stedloop

from stedloop.errors import ConfigError
from stedloop.sweep.engine import run_sweep
from stedloop.sweep.spec import SweepSpec, load_sweep
from stedloop.sweep.table import FRAMES_NAME, TABLE_NAME, TIME_COLUMNS, table_rows

# 1 objective x 2 settings x 2 seeds, 8 frames (5 warm-up, then 3 model decisions with the
# background fit), the dense grid in 3 chunks: ~5 s in one process.
TINY = """
name = "tiny"
budget_frames = 8
seeds = 2
reps = 1
objectives = ["expert"]
dense_grid = [3, 2, 3]
grid_chunk_points = 6

[settings.defaults]

[settings.parameters]
surrogate_inputs = "parameters"
"""


def _without_ray(folder: Path) -> dict[str, str]:
    """An environment in which `import ray` fails, as where the extra is not installed."""
    (folder / "ray").mkdir(parents=True)
    (folder / "ray" / "__init__.py").write_text("raise ImportError('ray is not installed')\n")
    return {"PYTHONPATH": str(folder)}


def _read(path: Path, drop: tuple[str, ...]) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(handle)]


@pytest.mark.ray
def test_a_sweep_on_local_ray_equals_the_sequential_run(tmp_path: Path) -> None:
    sweep = tmp_path / "tiny.toml"
    sweep.write_text(TINY)
    # The sequential run, where Ray cannot even be imported.
    alone = run_stedloop(
        "sweep",
        str(sweep),
        "--workers",
        "0",
        "--out",
        str(tmp_path / "alone"),
        env=_without_ray(tmp_path / "no_ray"),
        timeout_s=180,
    )
    assert alone.returncode == 0, alone.stderr
    # Ray on 2 CPUs with a 100 MB object store and no dashboard (the engine's local settings).
    on_ray = run_stedloop(
        "sweep", str(sweep), "--workers", "2", "--out", str(tmp_path / "ray"), timeout_s=240
    )
    assert on_ray.returncode == 0, on_ray.stderr
    assert "local Ray with 2 worker(s)" in on_ray.stderr
    assert "in this process" in alone.stderr

    table_alone = _read(tmp_path / "alone" / TABLE_NAME, TIME_COLUMNS)
    table_ray = _read(tmp_path / "ray" / TABLE_NAME, TIME_COLUMNS)
    assert [r["setting"] for r in table_alone] == ["defaults", "parameters"]
    assert table_ray == table_alone
    frames_alone = _read(tmp_path / "alone" / FRAMES_NAME, ("decision_ms",))
    assert len(frames_alone) == 2 * 2 * 8
    assert _read(tmp_path / "ray" / FRAMES_NAME, ("decision_ms",)) == frames_alone
    # The settings differ, so the rows are not trivially equal to each other.
    assert [r["judged"] for r in frames_alone[:8]] != [r["judged"] for r in frames_alone[16:24]]
    for run in (alone, on_ray):  # the printed table
        assert "frames_to_95pc_median" in run.stdout
    for name in ("sweep_curves.png", "sweep_decision_ms.png"):
        assert (tmp_path / "ray" / name).stat().st_size > 1000


def test_without_ray_workers_say_so_in_one_line(tmp_path: Path) -> None:
    sweep = tmp_path / "tiny.toml"
    sweep.write_text(TINY)
    done = run_stedloop(
        "sweep", str(sweep), "--workers", "2", env=_without_ray(tmp_path / "no_ray")
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: sweeps on Ray need the optional extra: pip install 'stedloop[ray]' "
        "(or run them in this process with --workers 0)"
    ]


def test_the_command_line_and_the_sweep_engine_do_not_import_ray() -> None:
    code = (
        "import sys, stedloop.cli.main, stedloop.sweep.engine, stedloop.sweep.plots; "
        "print('ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("budget_frame = 30", "unknown key 'budget_frame' (did you mean 'budget_frames'?)"),
        ('objectives = ["expert", "sharpness"]', "key 'objectives.1': Input should be"),
        ("seeds = [1, 1]", "key 'seeds': must not repeat an entry"),
        ("budget_frames = 1000", "key 'budget_frames': Input should be less than or equal to 900"),
        ("seeds = 0", "key 'seeds': a seed count must be 1 to 100000"),
        ("dense_grid = [12, 1, 12]", "key 'dense_grid': each of the three counts must be 2"),
        ("threshold = 1.5", "key 'threshold': Input should be less than or equal to 1"),
        (
            "[settings.slow]\nrefit_evry = 1",
            "unknown key 'settings.slow.refit_evry' (did you mean 'refit_every'?)",
        ),
        ('[settings.grid]\nspace = "grid"', "key 'settings.grid.space': Input should be 'box'"),
        ("[settings.x]\nn_candidates = 1", "key 'settings.x.n_candidates': Input should be"),
        ("budget_frames = ", "is not valid TOML"),
    ],
)
def test_bad_sweep_files_are_one_line_naming_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as raised:
        load_sweep(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"sweep file {path}")
    assert expected in message, message


def test_a_bad_sweep_file_ends_the_command_with_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('objectives = ["expert"]\n[settings.slow]\nrefit_evry = 1\n')
    done = run_stedloop("sweep", str(path), "--workers", "0", "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: sweep file {path}: unknown key 'settings.slow.refit_evry' (did you mean "
        "'refit_every'?); known keys here: " + ", ".join(sorted(_settings_keys()))
    ]
    missing = run_stedloop("sweep", str(tmp_path / "none.toml"), "--workers", "0")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: sweep file {tmp_path / 'none.toml'} does not exist"
    ]


def _settings_keys() -> list[str]:
    from stedloop.sweep.spec import SweepSettings

    return list(SweepSettings.model_fields)


def test_the_example_sweep_file_is_valid() -> None:
    spec = load_sweep(Path(__file__).resolve().parents[1] / "configs" / "sweep_example.toml")
    assert set(spec.settings) == {"defaults", "parameters", "durand"}


def test_the_table_follows_the_sessions_whatever_the_grid_chunks() -> None:
    spec = SweepSpec.model_validate(
        {"budget_frames": 6, "seeds": [3], "reps": 1, "dense_grid": [2, 2, 2]}
    )
    results = run_sweep(spec, workers=0)
    (row,) = table_rows(results)
    ((seed, run),) = results.runs[("expert", "actin", "defaults")]
    assert seed == 3 and len(run.judged) == len(run.observed) == len(run.decision_s) == 6
    best = results.best[("expert", "actin")]
    assert float(row["best_within_budget_share"]) == pytest.approx(max(run.judged) / best, 1e-5)
    # One point per job gives the same best achievable value and the same sessions.
    chunked = run_sweep(spec.model_copy(update={"grid_chunk_points": 1}), workers=0)
    assert chunked.best == results.best
    assert chunked.runs[("expert", "actin", "defaults")][0][1].judged == run.judged


def _data_set(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.ray
def test_dataset_synth_fans_out_on_ray_to_the_same_files(tmp_path: Path) -> None:
    """`dataset synth --shards 3` gives the same TIFFs and manifest in this process and as
    Ray tasks; one shard is the single random stream of a plain run."""
    common = ["dataset", "synth", "--n", "6", "--seed", "4", "--variants", "1", "--json"]
    here = run_stedloop(*common, "--shards", "3", "--out", str(tmp_path / "here"))
    assert here.returncode == 0, here.stderr
    ray = run_stedloop(
        *common, "--shards", "3", "--workers", "2", "--out", str(tmp_path / "ray"), timeout_s=300
    )
    assert ray.returncode == 0, ray.stderr
    files = _data_set(tmp_path / "here")
    assert len(files) == 13  # 6 frames, 6 variants, the manifest
    assert files == _data_set(tmp_path / "ray")
    plain = run_stedloop(*common, "--out", str(tmp_path / "plain"))
    one = run_stedloop(*common, "--shards", "1", "--out", str(tmp_path / "one"))
    assert plain.returncode == one.returncode == 0, plain.stderr + one.stderr
    assert _data_set(tmp_path / "plain") == _data_set(tmp_path / "one") != files


def test_dataset_synth_on_ray_without_ray_says_so_before_writing(tmp_path: Path) -> None:
    done = run_stedloop(
        "dataset",
        "synth",
        "--n",
        "2",
        "--workers",
        "2",
        "--out",
        str(tmp_path / "d"),
        env=_without_ray(tmp_path / "fake"),
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "error: data sets on Ray need the optional extra: pip install 'stedloop[ray]' "
        "(or run them in this process with --workers 0)"
    )
    assert not (tmp_path / "d").exists()
