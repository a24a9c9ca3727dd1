"""Search a kernel family's tile space (Optuna), score candidates (cost model or GPU), replay."""
