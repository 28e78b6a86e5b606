"""dassdp-bench: throughput benchmarks (loaders, model, dassdp, convert, e2e) with honest timing.

Every mode writes the same JSON shape (see docs/benchmarks.md): `results` records with mode, case, metric,
unit, min, median, max (plus samples and settings) and `ratios` {a, b, metric, median} from interleaved runs.
"""
from tools.bench.harness import Bench, PeakMemory, timed

__all__ = ["Bench", "PeakMemory", "timed"]
