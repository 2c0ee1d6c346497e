"""Drift: keel beside Evidently 0.7 on the same data, and the sensitivity check over 20 seeds.

    python benchmarks/bench_monitoring.py                 # 100,000 and 1,000,000 rows x 25 columns
    python benchmarks/bench_monitoring.py --rows 100000   # one size
    python benchmarks/bench_monitoring.py --quick         # 20,000 rows, 5 seeds

The generator (numpy, seeded) makes a reference and a current frame of N rows:
20 numeric columns (normal, log-normal, uniform, integer-valued) and 5
categorical ones (pandas ``category`` dtype). In the current frame 4 columns are
shifted, mildly, as real drift starts: n0 mean +0.05 sd, n1 sd x1.08, n2 mean
+0.2 sd, c0 two category shares moved by 2 points. The other 21 never move.

Each tool runs in its own process, from the same Parquet files loaded into the
same pandas frames with categorical dtypes (the memory the Parquet reader kept
is handed back to the system before either tool starts, so both start from the
frames' own size); the timed part is the drift computation only. Memory, read
before anything else runs (keel's SciPy checks come after), each figure from the
peak RSS (Linux ``VmHWM``, reset with ``/proc/self/clear_refs``):

- peak: the whole process's peak RSS (interpreter, pandas, the frames, the tool);
- own: the tool's peak above the RSS with the frames loaded, its imports included;
- run: the computation's peak above the RSS after the tool's imports and its
  warm-up call (imports excluded).


- keel: ``keel.drift(reference, current)`` (its defaults: KS and Jensen-Shannon
  with thresholds learned from the reference); every statistic is computed in
  the same pass, Evidently's (normed Wasserstein, Jensen-Shannon) among them, and
  checked against SciPy on the same inputs (the largest difference is printed);
  then ``compare`` with the reference fitted beforehand, as a monitor applies a
  stored baseline.
- Evidently (installed into benchmarks/.venvs/evidently): ``Report([DataDriftPreset()])``
  with its defaults, then with chi-square forced for the categorical columns.

Sensitivity: keel's defaults over 20 seeds (each shifted column flagged in at
least 19, at most one false flag among the 20 x 21 unshifted). Prints the
figures and writes them into this folder's README.md (the monitoring section).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import venv
from pathlib import Path

from _readme import write_section  # benchmarks/ is the script's folder

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venvs" / "evidently"
DATA = HERE / ".data" / "monitoring"
EVIDENTLY = "evidently>=0.7,<0.8"
EVIDENTLY_PINS = ["pandas<3"]  # evidently 0.7 imports a helper pandas 3 removed
SHIFTED = ["n0", "n1", "n2", "c0"]
NUMERIC = [f"n{i}" for i in range(20)]
CATEGORICAL = [f"c{i}" for i in range(5)]


def generate(rows: int, seed: int, *, current: bool) -> object:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed * 2 + int(current))
    cols: dict[str, object] = {}
    for i, name in enumerate(NUMERIC):
        kind = i % 4
        if kind == 0:
            x = rng.normal(50, 10, rows)
        elif kind == 1:
            x = rng.lognormal(3, 0.5, rows)
        elif kind == 2:
            x = rng.uniform(0, 100, rows)
        else:
            x = rng.poisson(12, rows).astype(float)
        cols[name] = x
    if current:
        cols["n0"] = rng.normal(50 + 0.5, 10, rows)  # +0.05 sd
        cols["n1"] = np.exp(rng.normal(3, 0.5 * 1.08, rows))  # spread x1.08
        cols["n2"] = rng.uniform(0, 100, rows) + 0.2 * 100 / np.sqrt(12)  # +0.2 sd
    for i, name in enumerate(CATEGORICAL):
        k = 4 + i
        p = np.linspace(2, 1, k)
        p = p / p.sum()
        if current and name == "c0":
            p = p.copy()
            p[0] -= 0.02
            p[-1] += 0.02
        cols[name] = pd.Categorical(rng.choice([f"v{j}" for j in range(k)], rows, p=p))
    return pd.DataFrame(cols)


def files(rows: int, seed: int) -> tuple[Path, Path]:
    DATA.mkdir(parents=True, exist_ok=True)
    ref, cur = DATA / f"ref_{rows}_{seed}.parquet", DATA / f"cur_{rows}_{seed}.parquet"
    if not ref.exists() or not cur.exists():
        generate(rows, seed, current=False).to_parquet(ref)  # type: ignore[attr-defined]
        generate(rows, seed, current=True).to_parquet(cur)  # type: ignore[attr-defined]
    return ref, cur


def _frames(ref: str, cur: str) -> tuple[object, object]:
    import gc

    import pandas as pd
    import pyarrow as pa

    a, b = pd.read_parquet(ref), pd.read_parquet(cur)
    for c in CATEGORICAL:
        a[c], b[c] = a[c].astype("category"), b[c].astype("category")
    gc.collect()
    pa.default_memory_pool().release_unused()  # what the Parquet reader kept goes back to the system: both tools start from the frames
    return a, b


def _memory(name: str) -> float:
    """VmHWM (peak) or VmRSS (now) of this process, in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(name + ":"))


def _mark() -> tuple[float, float]:
    """(peak RSS since the last mark, RSS now); the peak is reset, so the next stage's peak is measured from here."""
    peak, now = _memory("VmHWM"), _memory("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # Linux: "5" resets the peak RSS to the current RSS
        f.write("5")
    return peak, now


def _memory_figures(frames: tuple[float, float], imports: tuple[float, float]) -> dict:
    """Peak RSS of the process; the tool's own peak above the frames (imports included); the run's peak above the imports."""
    peak = _memory("VmHWM")
    return {"peak_rss_mb": max(frames[0], imports[0], peak), "frames_rss_mb": frames[1], "imports_rss_mb": imports[1],
            "own_peak_mb": max(imports[0], peak) - frames[1], "run_peak_mb": peak - imports[1]}


def child_keel(ref: str, cur: str, verify: bool) -> dict:
    a, b = _frames(ref, cur)
    ready = _mark()
    import keel

    keel.drift(a.head(2000), b.head(2000))  # imports and first-call costs outside the timing, as for Evidently below
    imported = _mark()
    t0, c0 = time.perf_counter(), time.process_time()
    report = keel.drift(a, b)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    memory = _memory_figures(ready, imported)
    from keel.monitoring.drift import as_table, compare
    from keel.monitoring.reference import fit_reference

    fitted = fit_reference(as_table(a, "reference"))  # as a stored baseline holds it: every method's thresholds
    t1 = time.perf_counter()
    compare(fitted, as_table(b, "current"))
    out = {"seconds": seconds, "cpu": cpu, "baseline_seconds": time.perf_counter() - t1, "flagged": report.drifted, "methods": sorted({c.method for c in report.columns}),
           "wasserstein_norm": {c.column: c.statistics.get("wasserstein") for c in report.columns},
           "js": {c.column: c.statistics.get("js") for c in report.columns}, **memory}
    if verify:  # after the memory is read: SciPy's checks are not keel's memory
        import numpy as np
        import scipy.stats as ss
        from scipy.spatial.distance import jensenshannon

        from keel.monitoring import stats as S

        worst = 0.0
        for c in NUMERIC:
            x, y = a[c].to_numpy(), b[c].to_numpy()
            col = report[c]
            worst = max(worst, abs(col.statistics["ks"] - ss.ks_2samp(x, y, method="asymp").statistic),
                        abs(col.statistics["wasserstein"] - ss.wasserstein_distance(x, y) / max(np.std(x), 1e-3)))
        for c in CATEGORICAL:
            cats = sorted(set(a[c].astype(str)) | set(b[c].astype(str)))
            p = a[c].astype(str).value_counts().reindex(cats, fill_value=0).to_numpy(float)
            q = b[c].astype(str).value_counts().reindex(cats, fill_value=0).to_numpy(float)
            worst = max(worst, abs(report[c].statistics["js"] - jensenshannon(S.shares(p), S.shares(q))),
                        abs(report[c].statistics["chi2"] - ss.chi2_contingency(np.stack([p, q]), correction=False).statistic))
        out["max_abs_diff_vs_scipy"] = worst
    return out


def child_evidently(ref: str, cur: str, forced_chi2: bool) -> dict:
    a, b = _frames(ref, cur)
    ready = _mark()
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    preset = DataDriftPreset(cat_method="chisquare") if forced_chi2 else DataDriftPreset()
    warm = Report([DataDriftPreset()])
    warm.run(Dataset.from_pandas(b.head(2000), data_definition=definition), Dataset.from_pandas(a.head(2000), data_definition=definition))
    imported = _mark()
    t0, c0 = time.perf_counter(), time.process_time()
    cur_ds = Dataset.from_pandas(b, data_definition=definition)
    ref_ds = Dataset.from_pandas(a, data_definition=definition)
    result = Report([preset]).run(cur_ds, ref_ds)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    memory = _memory_figures(ready, imported)  # before reading the results out, as for keel
    flagged, methods, values = [], set(), {}
    for m in result.dict()["metrics"]:
        cfg = m.get("config") or {}
        if not str(cfg.get("type", "")).endswith("ValueDrift"):
            continue
        value, threshold, method = float(m["value"]), float(cfg["threshold"]), str(cfg["method"])
        methods.add(method)
        values[cfg["column"]] = [method, value]
        if (value < threshold) if "p_value" in method else (value >= threshold):
            flagged.append(cfg["column"])
    return {"seconds": seconds, "cpu": cpu, "flagged": sorted(flagged), "methods": sorted(methods), "values": values, **memory}


def child_sensitivity(rows: int, seeds: int) -> dict:
    import keel

    hits = dict.fromkeys(SHIFTED, 0)
    false = 0
    for seed in range(seeds):
        a, b = generate(rows, 1000 + seed, current=False), generate(rows, 1000 + seed, current=True)
        flagged = set(keel.drift(a, b).drifted)
        for c in SHIFTED:
            hits[c] += c in flagged
        false += len(flagged - set(SHIFTED))
    return {"seeds": seeds, "hits": hits, "false_flags": false, "unshifted_checks": seeds * (25 - len(SHIFTED))}


def ensure_evidently() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {VENV} and installing {EVIDENTLY} ...", flush=True)
        venv.create(VENV, with_pip=True)
    probe = subprocess.run([str(py), "-c", "import evidently, pyarrow"], capture_output=True)
    if probe.returncode:
        subprocess.run([str(py), "-m", "pip", "install", "-q", EVIDENTLY, *EVIDENTLY_PINS, "pyarrow"], check=True)
    return py


def run(py: str, *args: str) -> dict:
    src = str(HERE.parent / "src")
    env = {"PYTHONPATH": src, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([py, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"child {args[0]} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, action="append")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-peer", action="store_true", help="keel only (no Evidently venv)")
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "keel":
            out = child_keel(rest[0], rest[1], rest[2] == "1")
        elif kind == "evidently":
            out = child_evidently(rest[0], rest[1], rest[2] == "1")
        else:
            out = child_sensitivity(int(rest[0]), int(rest[1]))
        print(json.dumps(out, default=str))
        return
    sizes = args.rows or ([20_000] if args.quick else [100_000, 1_000_000])
    seeds = 5 if args.quick else args.seeds
    evid = None if args.no_peer else str(ensure_evidently())
    lines = ["| rows x 25 | keel drift (CPU) | Evidently DataDriftPreset (CPU) | speed-up wall (CPU) | keel RSS: peak (own; run) | "
             "Evidently RSS: peak (own; run) | RSS ratio: peak (own; run) | keel with a fitted reference |",
             "|---|---|---|---|---|---|---|---|"]
    flags = []

    def mem(d: dict) -> str:
        return f"{d['peak_rss_mb']:.0f} MB ({d['own_peak_mb']:.0f}; {d['run_peak_mb']:.0f})"

    for rows in sizes:
        ref, cur = files(rows, 0)
        k = run(sys.executable, "keel", str(ref), str(cur), "1" if rows <= 200_000 else "0")
        print(f"{rows:>9,} keel      {k['seconds']:7.2f} s ({k['cpu']:.2f} CPU-s)  {mem(k)}  flagged {k['flagged']}; "
              f"with a fitted reference {k['baseline_seconds']:.2f} s", flush=True)
        if "max_abs_diff_vs_scipy" in k:
            print(f"          keel vs SciPy: largest difference {k['max_abs_diff_vs_scipy']:.2e}", flush=True)
        if evid is None:
            lines.append(f"| {rows:,} | {k['seconds']:.2f} s ({k['cpu']:.2f}) | - | - | {mem(k)} | - | - | {k['baseline_seconds']:.2f} s |")
            continue
        e = run(evid, "evidently", str(ref), str(cur), "0")
        print(f"{rows:>9,} evidently {e['seconds']:7.2f} s ({e['cpu']:.2f} CPU-s)  {mem(e)}  flagged {e['flagged']} ({', '.join(e['methods'])})", flush=True)
        same = [abs(v - (k["wasserstein_norm"] if "Wasserstein" in m else k["js"])[c]) for c, (m, v) in e["values"].items()
                if "Wasserstein" in m or "Jensen" in m]
        if same:
            print(f"          Evidently's statistics (normed Wasserstein, Jensen-Shannon) vs keel's: largest difference {max(same):.2e}", flush=True)
        lines.append(f"| {rows:,} | {k['seconds']:.2f} s ({k['cpu']:.2f}) | {e['seconds']:.2f} s ({e['cpu']:.2f}) | "
                     f"{e['seconds'] / k['seconds']:.1f}x ({e['cpu'] / k['cpu']:.1f}x) | {mem(k)} | {mem(e)} | "
                     f"{k['peak_rss_mb'] / e['peak_rss_mb']:.2f} ({k['own_peak_mb'] / e['own_peak_mb']:.2f}; {k['run_peak_mb'] / max(e['run_peak_mb'], 1e-9):.2f}) | "
                     f"{k['baseline_seconds']:.2f} s |")
        if rows == sizes[0]:
            chi = run(evid, "evidently", str(ref), str(cur), "1")
            flags.append(f"- on {rows:,} rows, shifted {SHIFTED}: keel flags {k['flagged']}; Evidently's defaults flag {e['flagged']}; "
                         f"Evidently with chi-square forced for categoricals flags {chi['flagged']}.")
    sens = run(sys.executable, "sensitivity", str(sizes[0]), str(seeds))
    print(f"sensitivity over {seeds} seeds at {sizes[0]:,} rows: hits {sens['hits']}, false flags {sens['false_flags']} of {sens['unshifted_checks']}")
    flags.append(f"- keel's defaults over {seeds} seeds at {sizes[0]:,} rows: shifted columns flagged {sens['hits']} times; "
                 f"{sens['false_flags']} false flags among {sens['unshifted_checks']} unshifted column checks.")
    import os

    body = "\n".join([f"Wall time (and CPU seconds) of the drift computation, frames in memory, first-call costs excluded. Memory, each tool "
                      "in a fresh process of its own: the whole process's peak RSS; in brackets its own peak above the RSS with the two "
                      "frames loaded (its imports included), then the run's peak above the RSS after its imports and warm-up call. "
                      "The issue's ratio (a third of Evidently's peak) is the first figure. Machine: "
                      f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end of the run "
                      "(shared with other work: wall times are inflated for both tools alike). The last column: `keel.monitoring.drift.compare` "
                      "with the reference fitted beforehand (as a monitor run applies a stored baseline).", "",
                      *lines, "", *flags])
    write_section("monitoring", body, intro="## Monitoring: drift beside Evidently 0.7 (`python benchmarks/bench_monitoring.py`)")
    print(body)


if __name__ == "__main__":
    main()
