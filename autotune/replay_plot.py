"""A PNG of replay's mean best-so-far curves, one panel per space (matplotlib: extra [plots])."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from autotune.recorded import RecordError

INSTALL_HINT = 'pip install -e ".[plots]"'


def require_matplotlib() -> None:
    """RecordError (one line, with the install command) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RecordError(f"--plot needs matplotlib; install it with {INSTALL_HINT}") from None


def plot_curves(curves: Mapping[tuple[str, str], list[float]], path: Path) -> None:
    """Write mean fraction of the optimum against evaluations, per space and strategy."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CI or on a GPU node
    import matplotlib.pyplot as plt

    spaces = sorted({space for space, _ in curves})
    fig, axes = plt.subplots(
        1, len(spaces), figsize=(4.5 * len(spaces), 3.6), squeeze=False, sharey=True
    )
    for ax, space in zip(axes[0], spaces, strict=True):
        for (name, strategy), curve in sorted(curves.items()):
            if name == space:
                ax.plot(range(1, len(curve) + 1), curve, label=strategy)
        ax.set_title(space)
        ax.set_xlabel("evaluations")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean t_opt / t_found")
    axes[0][-1].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
