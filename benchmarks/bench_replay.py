"""Search efficiency on the recorded GPU spaces: fraction of optimum at 25 and 100 evaluations.

Run: python -m pytest benchmarks/bench_replay.py --benchmark-only -p no:cacheprovider -s
The timed quantity is one full replay (all seeds) of a strategy; the numbers that matter, the
mean and std of t_opt / t_found, go to each benchmark's extra_info and are printed as the
table `python -m autotune.replay` prints. No assertions on time or on the fractions.
Published reference (Schoonhoven et al. 2022, 50 runs): GEMM@100 best 0.937 vs random 0.834;
convolution@25 0.752 vs 0.673, @100 0.905 vs 0.797.
"""

from __future__ import annotations

import pytest

from autotune.replay import ReplayRow, format_table, load_space, replay, spaces_dir

SEEDS = 50
BUDGETS = (25, 100)
SPACE_FILES = ("convolution_A4000.json.gz", "gemm_RTX_2080_Ti.json.gz")
ROWS: list[ReplayRow] = []


@pytest.fixture(scope="module", params=SPACE_FILES)
def recorded(request):
    path = spaces_dir() / request.param
    if not path.exists():
        pytest.skip(f"{path} not present (set TESSERA_TUNING_SPACES_DIR)")
    return load_space(path)


@pytest.mark.parametrize("strategy", ["gp", "tpe", "random"])
@pytest.mark.parametrize("budget", BUDGETS)
def test_replay_fraction_of_optimum(benchmark, recorded, budget, strategy):
    rows = benchmark.pedantic(
        replay,
        args=(recorded,),
        kwargs={"budget": budget, "seeds": SEEDS, "strategies": [strategy]},
        rounds=1,
        iterations=1,
    )
    (row,) = rows
    benchmark.extra_info.update(
        {
            "space": row.space,
            "budget": budget,
            "strategy": strategy,
            "mean_fraction": round(row.mean_fraction, 4),
            "std_fraction": round(row.std_fraction, 4),
            "seeds": SEEDS,
        }
    )
    ROWS.append(row)
    print("\n" + format_table(ROWS))
