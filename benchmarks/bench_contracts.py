"""Data contracts: keel beside Great Expectations on the same data and checks.

    python benchmarks/bench_contracts.py                 # 10,000,000 rows x 20 columns
    python benchmarks/bench_contracts.py --rows 2000000
    python benchmarks/bench_contracts.py --quick         # 200,000 rows, a fast check

Generates a Parquet file (numpy, seeded) of N rows x 20 columns with a few
violations injected, and a reference batch of 200,000 rows from the same
distribution. Then, each in its own subprocess, starting from the Parquet file:

- keel: one contract of 40 column checks + 5 distribution checks (PSI x2, KS,
  mean change, category shares) against a snapshot pinned from the reference;
  ``keel.validate(path, contract, store=False)``.
- Great Expectations (installed into benchmarks/.venvs/gx, pandas engine, the
  default for a DataFrame): the 40 equivalent column expectations + 5
  distribution expectations (KL divergence x2 against partitions built from the
  reference, quantiles, mean, standard deviation), one suite, ``batch.validate``.

Both must agree on which column checks fail (the script asserts it). Prints the
wall time of load + validate, the peak RSS of each process and the ratio, and
writes them into this folder's README.md (the contracts section).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

from _readme import write_section  # benchmarks/ is the script's folder

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venvs" / "gx"
DATA = HERE / ".data"
GX_REQUIREMENT = "great_expectations"

# (check id, kind, column, args): the 40 column checks, written once and translated for each tool.
COLUMN_CHECKS: list[tuple[str, str, str, dict]] = []
for i in range(8):
    COLUMN_CHECKS += [(f"f{i}.not_null", "not_null", f"f{i}", {}), (f"f{i}.between", "between", f"f{i}", {"min": -100.0, "max": 100.0})]
for i in range(4):
    COLUMN_CHECKS += [(f"i{i}.not_null", "not_null", f"i{i}", {}), (f"i{i}.between", "between", f"i{i}", {"min": 0, "max": 1000})]
COLUMN_CHECKS += [
    ("id.unique", "unique", "id", {}),
    ("id.not_null", "not_null", "id", {}),
    ("id.increasing", "monotonic", "id", {}),
    ("s0.in_set", "allowed_values", "s0", {"values": ["a", "b", "c", "d"]}),
    ("s1.in_set", "allowed_values", "s1", {"values": ["x", "y", "z"]}),
    ("s2.in_set", "allowed_values", "s2", {"values": ["red", "green", "blue"]}),
    ("s0.not_null", "not_null", "s0", {}),
    ("code.regex", "regex", "code", {"pattern": r"^[A-Z]{2}-\d{3}$"}),
    ("code.length", "length", "code", {"min": 6, "max": 6}),
    ("code.not_null", "not_null", "code", {}),
    ("f8.mostly_not_null", "max_null_fraction", "f8", {"max": 0.05}),
    ("f9.min", "min", "f9", {"value": -100.0}),
    ("f9.not_null", "not_null", "f9", {}),
    ("s1.not_null", "not_null", "s1", {}),
    ("s2.not_null", "not_null", "s2", {}),
    ("i0.positive_or_zero", "min", "i0", {"value": 0}),
]
assert len(COLUMN_CHECKS) == 40, len(COLUMN_CHECKS)
# distribution checks: keel rule / GX expectation
DISTRIBUTION = [
    ("f0", "psi", "KL divergence < 0.1 (bins from reference)"),
    ("f1", "ks", "quantiles within reference ± 0.1"),
    ("f2", "mean_change", "mean within reference ± 5 %"),
    ("s0", "category_share", "KL divergence < 0.1 (reference shares)"),
    ("f3", "psi", "standard deviation within reference ± 5 %"),
]
# the violations generate() injects, as keel check ids (column.rule)
SHOULD_FAIL = {"f0.between", "i1.between", "id.unique", "id.monotonic", "s1.allowed_values", "code.regex", "code.length", "f8.max_null_fraction"}


def generate(path: Path, rows: int, seed: int, *, inject: bool) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    chunk = 1_000_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        cols = {"id": np.arange(start, start + n, dtype=np.int64)}
        for i in range(10):
            cols[f"f{i}"] = rng.normal(20 if i == 2 else 0, 10, n)
        cols["f8"][rng.random(n) < 0.01] = np.nan
        for i in range(4):
            cols[f"i{i}"] = rng.integers(0, 1000, n)
        cols["s0"] = rng.choice(np.array(["a", "b", "c", "d"]), n, p=[0.4, 0.3, 0.2, 0.1])
        cols["s1"] = rng.choice(np.array(["x", "y", "z"]), n)
        cols["s2"] = rng.choice(np.array(["red", "green", "blue"]), n)
        letters = rng.choice(np.array(list("ABCDEFGH")), (n, 2))
        digits = rng.integers(100, 1000, n).astype(str)
        cols["code"] = np.char.add(np.char.add(np.char.add(letters[:, 0], letters[:, 1]), "-"), digits)
        if inject:
            cols["f8"][rng.random(n) < 0.06] = np.nan  # 7 % missing in all: above the 5 % allowed
        if inject and start == 0:
            cols["f0"][:50] = 500.0
            cols["i1"][50:60] = 5000
            cols["id"][100:103] = 7
            cols["s1"][200:220] = "w"
            cols["code"][300:305] = "ab-12"
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=256_000)
    assert writer is not None
    writer.close()


KEEL_RUNNER = r'''
import json, os, sys, time
from pathlib import Path
from keel import config
spec = json.loads(sys.argv[1])
os.chdir(spec["project"]); config.init_project(Path(spec["project"]), force=True); config.reset()
from keel.contracts import Column, Contract, pin_snapshot, validate
from keel.contracts import checks as c
build = {
    "not_null": lambda a: c.not_null(), "between": lambda a: c.between(a["min"], a["max"]), "unique": lambda a: c.unique(),
    "monotonic": lambda a: c.monotonic(), "allowed_values": lambda a: c.allowed_values(a["values"]),
    "regex": lambda a: c.regex(a["pattern"]), "length": lambda a: c.length(a["min"], a["max"]),
    "max_null_fraction": lambda a: c.max_null_fraction(a["max"]), "min": lambda a: c.min(a["value"]),
}
cols = {}
for cid, kind, col, args in spec["checks"]:
    cols.setdefault(col, []).append(build[kind](args))
dist = {"psi": lambda: c.psi(0.1), "ks": lambda: c.ks(0.001), "mean_change": lambda: c.mean_change(5), "category_share": lambda: c.category_share(3)}
for col, kind, _ in spec["distribution"]:
    cols.setdefault(col, []).append(dist[kind]())
contract = Contract("bench", columns={k: Column(checks=v) for k, v in cols.items()}, unexpected_columns="ignore", reference="snapshot:bench-ref")
pin_snapshot("bench-ref", spec["reference"])
t0 = time.perf_counter()
report = validate(spec["data"], contract, store=False)
seconds = time.perf_counter() - t0
failed = sorted(r.check_id for r in report.failures)
import resource
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "failed": failed, "checks": len(report.results), "rows": report.num_rows, "rss": rss}))
'''

GX_RUNNER = r'''
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
import pandas as pd
import great_expectations as gx
import great_expectations.expectations as gxe
spec = json.loads(sys.argv[1])
ref = pd.read_parquet(spec["reference"])
ctx = gx.get_context(mode="ephemeral")
suite = ctx.suites.add(gx.ExpectationSuite(name="bench"))
names = {}
def add(cid, e):
    suite.add_expectation(e); names[id(e)] = cid
for cid, kind, col, a in spec["checks"]:
    if kind == "not_null": e = gxe.ExpectColumnValuesToNotBeNull(column=col)
    elif kind == "between": e = gxe.ExpectColumnValuesToBeBetween(column=col, min_value=a["min"], max_value=a["max"])
    elif kind == "min": e = gxe.ExpectColumnValuesToBeBetween(column=col, min_value=a["value"])
    elif kind == "unique": e = gxe.ExpectColumnValuesToBeUnique(column=col)
    elif kind == "monotonic": e = gxe.ExpectColumnValuesToBeIncreasing(column=col)
    elif kind == "allowed_values": e = gxe.ExpectColumnValuesToBeInSet(column=col, value_set=a["values"])
    elif kind == "regex": e = gxe.ExpectColumnValuesToMatchRegex(column=col, regex=a["pattern"])
    elif kind == "length": e = gxe.ExpectColumnValueLengthsToBeBetween(column=col, min_value=a["min"], max_value=a["max"])
    elif kind == "max_null_fraction": e = gxe.ExpectColumnValuesToNotBeNull(column=col, mostly=1 - a["max"])
    else: raise SystemExit(kind)
    add(cid, e)
# distribution expectations, with partitions/bounds built from the reference (untimed)
edges = np.quantile(ref["f0"].dropna(), np.linspace(0, 1, 11)); edges[0], edges[-1] = -1e9, 1e9
w = np.histogram(ref["f0"].dropna(), bins=edges)[0]; w = (w / w.sum()).tolist()
add("f0.psi", gxe.ExpectColumnKLDivergenceToBeLessThan(column="f0", partition_object={"bins": edges.tolist(), "weights": w}, threshold=0.1))
qs = [0.1, 0.25, 0.5, 0.75, 0.9]; qv = np.quantile(ref["f1"], qs)
add("f1.ks", gxe.ExpectColumnQuantileValuesToBeBetween(column="f1", quantile_ranges={"quantiles": qs, "value_ranges": [[v - 0.1 * 10, v + 0.1 * 10] for v in qv]}))
m = float(ref["f2"].mean())
add("f2.mean_change", gxe.ExpectColumnMeanToBeBetween(column="f2", min_value=m - 0.05 * abs(m) - 0.5, max_value=m + 0.05 * abs(m) + 0.5))
shares = ref["s0"].value_counts(normalize=True)
add("s0.category_share", gxe.ExpectColumnKLDivergenceToBeLessThan(column="s0", partition_object={"values": shares.index.tolist(), "weights": shares.tolist()}, threshold=0.1))
sd = float(ref["f3"].std())
add("f3.psi", gxe.ExpectColumnStdevToBeBetween(column="f3", min_value=sd * 0.95, max_value=sd * 1.05))
ds = ctx.data_sources.add_pandas("p")
bd = ds.add_dataframe_asset("a").add_batch_definition_whole_dataframe("b")
t0 = time.perf_counter()
df = pd.read_parquet(spec["data"])
batch = bd.get_batch(batch_parameters={"dataframe": df})
res = batch.validate(suite)
seconds = time.perf_counter() - t0
failed = []
for r in res.results:
    if not r.success:
        cfg = r.expectation_config
        col = cfg.kwargs.get("column")
        failed.append({"type": cfg.type, "column": col})
import resource
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "failed": failed, "checks": len(res.results), "gx": gx.__version__, "rss": rss}))
'''


def ensure_gx() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {VENV} and installing {GX_REQUIREMENT} ...", flush=True)
        venv.create(VENV, with_pip=True)
    probe = subprocess.run([str(py), "-c", "import great_expectations, pyarrow"], capture_output=True)
    if probe.returncode:
        subprocess.run([str(py), "-m", "pip", "install", "-q", GX_REQUIREMENT, "pyarrow"], check=True)
    return py


def run(cmd: list[str]) -> tuple[dict, float, float]:
    """Run a child; returns (its JSON output, wall seconds of the whole process, its peak RSS in MB)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{cmd[0]} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out, wall, out["rss"]


def _median(runs: list[tuple[dict, float, float]]) -> tuple[dict, float, float]:
    """The run of median load + validate time (its wall time and RSS go with it)."""
    ordered = sorted(runs, key=lambda r: r[0]["seconds"])
    return ordered[len(ordered) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--quick", action="store_true", help="200,000 rows")
    ap.add_argument("--no-readme", action="store_true", help="do not update benchmarks/README.md")
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per tool, alternating; medians are reported")
    args = ap.parse_args()
    rows = 200_000 if args.quick else args.rows
    DATA.mkdir(parents=True, exist_ok=True)
    data = DATA / f"contracts_{rows}.parquet"
    ref = DATA / "contracts_reference.parquet"
    if not ref.exists():
        generate(ref, 200_000, seed=1, inject=False)
    if not data.exists():
        print(f"generating {rows:,} rows x 20 columns -> {data}", flush=True)
        generate(data, rows, seed=2, inject=True)
    gx_py = ensure_gx()
    load_start = os.getloadavg()[0]
    spec = {"data": str(data), "reference": str(ref), "checks": COLUMN_CHECKS, "distribution": DISTRIBUTION}
    keel_runs, gx_runs = [], []
    for _ in range(max(1, args.repeat)):  # alternate, so that a noisy moment hits both tools
        with tempfile.TemporaryDirectory() as project:
            spec["project"] = project
            keel_runs.append(run([sys.executable, "-c", KEEL_RUNNER, json.dumps(spec)]))
        gx_runs.append(run([str(gx_py), "-c", GX_RUNNER, json.dumps(spec)]))
    keel_out, keel_wall, keel_rss = _median(keel_runs)
    gx_out, gx_wall, gx_rss = _median(gx_runs)
    print("keel runs (s):", ", ".join(f"{r[0]['seconds']:.2f}" for r in keel_runs), "| GX runs (s):", ", ".join(f"{r[0]['seconds']:.2f}" for r in gx_runs))

    keel_failed = set(keel_out["failed"])
    gx_failed_cols = {f["column"] for f in gx_out["failed"]}
    print(f"\nrows: {rows:,} x 20 columns ({data.stat().st_size / 1e6:.0f} MB Parquet); 40 column checks + 5 distribution checks")
    print(f"keel failed: {sorted(keel_failed)}")
    print(f"GX {gx_out['gx']} failed: {[f['type'] + ':' + str(f['column']) for f in gx_out['failed']]}")
    assert keel_failed == SHOULD_FAIL, keel_failed ^ SHOULD_FAIL
    assert gx_failed_cols == {c.split(".")[0] for c in SHOULD_FAIL}, gx_failed_cols
    ratio = gx_out["seconds"] / keel_out["seconds"]
    lines = [
        "| tool | load + validate (s) | whole process (s) | peak RSS (MB) |",
        "|---|---:|---:|---:|",
        f"| keel (DuckDB, fused) | {keel_out['seconds']:.2f} | {keel_wall:.2f} | {keel_rss:.0f} |",
        f"| Great Expectations {gx_out['gx']} (pandas) | {gx_out['seconds']:.2f} | {gx_wall:.2f} | {gx_rss:.0f} |",
        f"| **ratio (GX / keel)** | **{ratio:.1f}x** | {gx_wall / keel_wall:.1f}x | {gx_rss / max(keel_rss, 1):.1f}x |",
    ]
    print("\n" + "\n".join(lines))
    load = f"load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    print(load)
    if not args.no_readme:
        write_readme(rows, data.stat().st_size, lines, load, len(keel_runs))


def write_readme(rows: int, size: int, lines: list[str], load: str, runs: int) -> None:
    cpus = os.cpu_count()
    section = "\n".join(
        [
            "## Data contracts (`bench_contracts.py`) vs Great Expectations",
            "",
            f"{rows:,} rows x 20 columns ({size / 1e6:.0f} MB Parquet, generated), 40 column checks "
            "(not null, ranges, unique, increasing, in set, regex, length, mostly) + 5 distribution checks "
            "(keel: PSI x2, KS, mean change, category shares vs a pinned snapshot; GX: KL divergence x2, "
            "quantiles, mean, stdev vs bounds built from the same reference). Both start from the Parquet file; "
            f"GX validates a pandas DataFrame (its default engine). Both find the same failing column checks. "
            f"Measured on {cpus} cores ({load}), {time.strftime('%Y-%m-%d')}; each tool {runs} times in fresh processes, "
            "alternating, the median run shown. "
            "keel takes counts, min and max from the Parquet statistics (range checks whose observed range is inside "
            "their bounds need no per-row work), checks string columns of few distinct values once per value, and "
            "runs the rest in one fused DuckDB scan; the floor is reading the ten float columns to find NaN.",
            "",
            *lines,
            "",
            f"Reproduce: `python benchmarks/bench_contracts.py --rows {rows}` (`--quick` for 200,000 rows).",
        ]
    )
    write_section("contracts", section)
    print("updated benchmarks/README.md")


if __name__ == "__main__":
    main()
