"""Time a 10k-resample bootstrap CI of accuracy on 2000 examples; last line ``bootstrap_seconds=X.XXX`` (target < 1)."""
import time

import numpy as np

from fusionkit.evaluation.stats import bootstrap_ci

N_EXAMPLES, N_RESAMPLES = 2000, 10_000


def main() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, N_EXAMPLES)
    pred = np.where(rng.random(N_EXAMPLES) < 0.8, y, rng.integers(0, 4, N_EXAMPLES))
    bootstrap_ci("accuracy", y, pred, n_resamples=100)  # warm-up: first-call import and allocation costs
    start = time.perf_counter()
    point, low, high = bootstrap_ci("accuracy", y, pred, n_resamples=N_RESAMPLES)
    seconds = time.perf_counter() - start
    print(f"accuracy {point:.4f} [95% CI {low:.4f}, {high:.4f}] from {N_RESAMPLES} resamples of {N_EXAMPLES}")
    print(f"bootstrap_seconds={seconds:.3f}")


if __name__ == "__main__":
    main()
