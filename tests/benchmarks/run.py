"""`make bench`: benchmarks that put numbers on serving, TorchServe, training and the pipeline.

    serving     our server vs the model's raw forward pass, ResNet-18 and smallcnn, concurrency 1/8/32
    torchserve  the same ResNet-18 on TorchServe 0.12 (only with --torchserve: it needs Java 17 and
                installs its own environment in .bench/torchserve-venv on first use)
    training    our trainer vs the textbook PyTorch loop, images/s
    pipeline    `mlops pipeline --local` wall time minus the training job's own time

Each prints a table with its targets (PASS/FAIL) and writes bench/results/<name>.json with the
machine's details. Not part of `make test`. The exit status is 1 when a benchmark could not run (and,
with --strict, when a target was missed); figures on a busy machine are noise, so a FAIL alone does
not fail the run.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

# Run as a script (`python tests/benchmarks/run.py`): the repository root must be importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks import pipeline, serving, torchserve, training
from tests.benchmarks.common import FAIL, Result, report

NAMES = ("serving", "torchserve", "training", "pipeline")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python tests/benchmarks/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "benchmarks", nargs="*", metavar="NAME",
        help=f"which to run, of {', '.join(NAMES)} (default: all; torchserve only with --torchserve)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="shorter runs: a smoke test of the suite")
    parser.add_argument("--torchserve", action="store_true", help="also run the TorchServe benchmark")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any target is missed")
    parser.add_argument(
        "--serve-config", default="default", choices=sorted(serving.CONFIGS),
        help="named server configuration the serving targets are judged under (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--serve-env", action="append", default=[], metavar="MLOPS_KEY=VALUE",
        help="server environment on top of the configuration, repeatable (e.g. MLOPS_BATCH_MAX_WAIT_MS=2)",
    )  # fmt: skip
    parser.add_argument(
        "--textbook-workers", type=int, help="textbook DataLoader num_workers (default: cores)"
    )
    parser.add_argument("--ts-batch-size", type=int, default=32, help="TorchServe batchSize (default 32)")
    parser.add_argument("--ts-max-delay-ms", type=int, default=5, help="TorchServe maxBatchDelay (default 5)")
    parser.add_argument(
        "--pipeline-epochs", type=int, default=1, help="epochs of the pipeline's job (default 1)"
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.benchmarks if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    chosen = args.benchmarks or [n for n in NAMES if n != "torchserve" or args.torchserve]
    if args.torchserve and "torchserve" not in chosen:
        chosen.append("torchserve")
    args.chosen = [n for n in NAMES if n in chosen]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (a timeout, a CI cancel) unwinds like Ctrl-C, so every finally block stops its server.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    config = serving.ServerConfig.parse(args.serve_config, args.serve_env)
    settings = {
        "quick": args.quick,
        "benchmarks": args.chosen,
        "serve_configuration": {"name": config.name, "env": config.env},
    }
    print(
        f"benchmarks: {', '.join(args.chosen)}{' (quick)' if args.quick else ''}; results in bench/results/"
    )
    results: dict[str, list[Result]] = {}
    crashed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
        work = Path(tmp)

        def serving_results() -> list[Result]:
            return serving.run(work / "serving", quick=args.quick, config=config)

        def torchserve_results() -> list[Result]:
            ours = next((r for r in results.get("serving", []) if r.name == "serving-resnet18"), None)
            return torchserve.run(
                work / "torchserve", quick=args.quick, config=config, ours=ours,
                batch_size=args.ts_batch_size, max_delay_ms=args.ts_max_delay_ms,
            )  # fmt: skip

        def training_results() -> list[Result]:
            return training.run(work / "training", quick=args.quick, workers=args.textbook_workers)

        def pipeline_results() -> list[Result]:
            return pipeline.run(work / "pipeline", quick=args.quick, epochs=args.pipeline_epochs)

        runners: dict[str, Callable[[], list[Result]]] = {
            "serving": serving_results,
            "torchserve": torchserve_results,
            "training": training_results,
            "pipeline": pipeline_results,
        }
        for name in args.chosen:
            (work / name).mkdir()
            tick = time.monotonic()
            try:
                results[name] = runners[name]()
            except Exception as exc:  # one benchmark's failure must not hide the others' figures
                traceback.print_exc()
                failed = Result(name, f"{name}: did not run", [])
                failed.skipped = f"error: {type(exc).__name__}: {exc}"
                results[name] = [failed]
                crashed.append(name)
            for result in results[name]:
                report(result, {**settings, "seconds": round(time.monotonic() - tick, 1)})
    print("\nsummary:")
    missed = []
    for name in args.chosen:
        for result in results[name]:
            verdicts = result.verdicts
            line = result.skipped or (
                f"{verdicts.count('PASS')} of {len(verdicts)} targets met" if verdicts else "figures only"
            )
            print(f"  {result.name:<20} {line}")
            if FAIL in verdicts:
                missed.append(result.name)
    if crashed:
        return 1
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
