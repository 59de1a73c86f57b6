"""Speed of the scaling-law fit: BLAS threads during L-BFGS-B, and grid scoring (factored vs naive).

Usage (CPU):  python benchmarks/scaling_fit.py
Prints a markdown table. Synthetic runs from the paper's law with 1% noise; timings are wall-clock seconds.
"""

from __future__ import annotations

import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

from crossdistill.scaling import student_loss, supervised_loss
from crossdistill.scaling.fit import FitOptions, _data, _fit
from crossdistill.scaling.laws import PAPER, log_supervised_loss
from crossdistill.scaling.objective import DISTILLATION, SUPERVISED, grid_points, huber_value
from crossdistill.scaling.runs import RunTable


def runs(n_sup=80, n_dis=400, seed=0):
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e8), np.log(1e10), n_sup))
    D = N * np.exp(rng.uniform(np.log(2), np.log(2000), n_sup))
    sup = RunTable.from_arrays(N, D, supervised_loss(N, D) * np.exp(rng.normal(0, 0.01, n_sup)))
    N = np.exp(rng.uniform(np.log(1e8), np.log(1e10), n_dis))
    D = N * np.exp(rng.uniform(np.log(2), np.log(2000), n_dis))
    LT = supervised_loss(N, D) * np.exp(rng.uniform(np.log(0.7), np.log(1.4), n_dis))
    dis = RunTable.from_arrays(N, D, student_loss(N, D, LT) * np.exp(rng.normal(0, 0.01, n_dis)), LT)
    return sup, dis


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    sup, dis = runs()
    opts = FitOptions(n_bootstrap=0, progress=False)
    sup_data = _data(sup, None)
    dis_data = _data(dis, log_supervised_loss(np.log(dis.N), np.log(dis.D), PAPER.supervised))
    rows = []
    for threads in (None, 1):
        with threadpool_limits(limits=threads, user_api="blas"):
            t = timed(lambda: _fit(SUPERVISED, sup, sup_data, opts, "supervised"))
        rows.append((f"supervised fit, 80 runs, paper grid, BLAS threads = {threads or 'default'}", t))
    pts = grid_points(DISTILLATION)
    rows.append(("distillation grid scoring, 216,000 x 400, factored (used)",
                 timed(lambda: DISTILLATION.grid_scores(pts, dis_data, 1e-4))))
    rows.append(("distillation grid scoring, 216,000 x 400, naive predict_batch",
                 timed(lambda: [huber_value(DISTILLATION.predict_batch(pts[i:i + 10000], dis_data),
                                            dis_data["log_l"], 1e-4)
                                for i in range(0, len(pts), 10000)])))
    with threadpool_limits(limits=1, user_api="blas"):
        rows.append(("distillation fit, 400 runs, paper grid, 48 starts",
                     timed(lambda: _fit(DISTILLATION, dis, dis_data, opts, "distillation"))))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| what | seconds |\n|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.2f} |")


if __name__ == "__main__":
    main()
