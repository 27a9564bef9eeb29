"""``biolingual-edge bench``: speed and memory of the runtime on this unit, per precision and batch size.

Each model runs in its own spawned process, so its peak RSS and its time to first window are its
own (a fresh interpreter: bundle checksums, ONNX Runtime session or TensorRT engine, first window through
every stage). Models are named by manifest key: ONNX files (``fp32``, ``int8`` …) run in ``OrtBackend``,
engines (``trt-fp16`` …) in ``TrtBackend``, side by side in one report.
The audio is a real recording when one is given, else seeded noise; windows follow the configured
window/hop grid, so the streaming frontend does the work it does in the field.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console

from edge.audio.files import read_file
from edge.audio.windowing import Window, clip_windows
from edge.cli_support import report_errors
from edge.daemon.health import peak_rss_mb
from edge.errors import ConfigError, EdgeError
from edge.model.backends import create_backend
from edge.model.backends.int8_path import cpu_flags, integer_path, read_cpuinfo
from edge.model.backends.trt_api import require_tensorrt
from edge.model.bundle import Bundle, open_bundle
from edge.model.frontend_stream import StreamingLogMel
from edge.model.precision_gate import TRT_KEY_PREFIX
from edge.scoring.scorer import LabelSet, Scorer

DEFAULT_BATCHES = (1, 4, 8)
DEFAULT_WINDOWS = 24
"""Windows timed per batch size (after one warm-up batch)."""
SYNTHETIC_LABELS = 100
"""Label count scored against when the bundle has no label set (scoring cost grows with it)."""
NOISE_SEED = 0

stdout = Console(highlight=False)


@dataclass(frozen=True)
class BenchOptions:
    """What to time. Durations in seconds."""

    bundle: Path
    precisions: tuple[str, ...] = ()
    """Manifest keys (``fp32``, ``int8``, ``trt-fp16`` …). Empty: every model in the bundle this unit can run."""
    batches: tuple[int, ...] = DEFAULT_BATCHES
    windows: int = DEFAULT_WINDOWS
    window_s: float = 10.0
    hop_s: float = 5.0
    threads: int | None = None
    audio: Path | None = None
    optimized: bool = True
    """Use the bundle's ONNX Runtime-optimised graph when it has one."""


@dataclass(frozen=True)
class StageTimes:
    """Seconds spent per stage over a run."""

    frontend: float = 0.0
    inference: float = 0.0
    scoring: float = 0.0

    def __add__(self, other: StageTimes) -> StageTimes:
        return StageTimes(self.frontend + other.frontend, self.inference + other.inference,
                          self.scoring + other.scoring)


@dataclass(frozen=True)
class BatchResult:
    """Timings of one batch size. Latencies in milliseconds per window (call time / batch)."""

    batch: int
    windows: int
    p50_ms: float
    p99_ms: float
    windows_per_s: float
    real_time_factor: float
    """Audio seconds analysed per wall second: windows/s × hop."""
    inference_share: float
    """Share of the time spent in the model; the rest is frontend + scoring overhead."""


@dataclass(frozen=True)
class PrecisionResult:
    """All batch sizes of one precision, from one fresh process."""

    precision: str
    backend: str
    model_file: str
    time_to_first_window_s: float
    peak_rss_mib: float
    batches: list[BatchResult] = field(default_factory=list)


INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "avx512_bf16",
              "avx512_fp16", "asimd", "asimddp", "i8mm", "sve", "asimdhp", "bf16")
"""CPU features that decide ONNX Runtime's integer (and half) kernels: VNNI/AMX on x86, dot product
(``asimddp``: SDOT/UDOT) and ``i8mm`` (SMMLA) on ARM."""


def machine_info() -> dict[str, str]:
    """CPU, its INT8-relevant features, the integer path INT8 sessions take, cores and library versions for the
    report header."""
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    cpuinfo = read_cpuinfo()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model"):
            cpu = value.strip()
            break
    features = cpu_flags(cpuinfo)
    flags = " ".join(f for f in INT8_FLAGS if f in features) or "unknown"
    return {"cpu": cpu, "int8_flags": flags, "int8_path": integer_path(cpuinfo).description,
            "cores": str(os.cpu_count()), "machine": platform.machine(),
            "python": platform.python_version(), "numpy": np.__version__, "onnxruntime": onnxruntime.__version__}


def machine_line() -> str:
    """One header line for any benchmark: CPU, cores, INT8 features, ONNX Runtime and the load average."""
    info = machine_info()
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"CPU: {info['cpu']}, {info['cores']} cores; INT8 features: {info['int8_flags']}; INT8 path: "
            f"{info['int8_path']}; ONNX Runtime {info['onnxruntime']}; load average {load}")


def batched(windows: list[Window], size: int) -> Iterator[list[Window]]:
    for start in range(0, len(windows), size):
        yield windows[start : start + size]


def run_stages(frontend: StreamingLogMel, embed: Callable[[np.ndarray], np.ndarray], scorer: Scorer,
               batches: Iterable[list[Window]], latencies: list[float] | None = None) -> StageTimes:
    """Frontend -> backend -> scorer over consecutive batches of one stream; returns time per stage."""
    times = StageTimes()
    for windows in batches:
        start = time.perf_counter()
        features = frontend.batch(windows)
        featured = time.perf_counter()
        embeddings = embed(features)
        embedded = time.perf_counter()
        scorer.score(embeddings)
        scored = time.perf_counter()
        times = times + StageTimes(featured - start, embedded - featured, scored - embedded)
        if latencies is not None:
            latencies.append((scored - start) / len(windows))
    return times


def bench_labels(bundle: Bundle) -> LabelSet:
    """The bundle's first label set, else seeded random unit vectors (scoring cost only)."""
    for entry in bundle.manifest.label_sets.values():
        data = np.load(bundle.path(entry.path))
        return LabelSet(entry.names, data["embeddings"].astype(np.float32))
    rng = np.random.default_rng(NOISE_SEED)
    rows = rng.standard_normal((SYNTHETIC_LABELS, bundle.manifest.embedding_dim)).astype(np.float32)
    return LabelSet(tuple(f"label {i}" for i in range(SYNTHETIC_LABELS)),
                    rows / np.linalg.norm(rows, axis=1, keepdims=True))


def bench_audio(options: BenchOptions, rate: int, window: int, hop: int) -> np.ndarray:
    """Enough audio for warm-up plus ``windows`` windows at the largest batch: a recording (tiled) or noise."""
    needed = window + hop * (options.windows + max(options.batches))
    if options.audio is not None:
        recording = read_file(options.audio, rate)
        return np.tile(recording, -(-needed // recording.shape[0]))[:needed]
    return (np.random.default_rng(NOISE_SEED).standard_normal(needed) * 0.1).astype(np.float32)


def bench_precision(options: BenchOptions, precision: str) -> PrecisionResult:
    """Time one precision in this process (call it in a fresh process for clean start-up and RSS)."""
    started = time.perf_counter()
    bundle = open_bundle(options.bundle)
    params = bundle.manifest.frontend
    rate = params.sampling_rate
    window, hop = round(options.window_s * rate), round(options.hop_s * rate)
    name, model_precision = backend_for(precision)
    backend = create_backend(bundle, backend=name, precision=model_precision, threads=options.threads,
                             optimized=options.optimized)
    frontend = StreamingLogMel(params)
    scorer = Scorer(bench_labels(bundle), bundle.manifest.logit_scale)
    windows = clip_windows(bench_audio(options, rate, window, hop), window, hop)
    run_stages(frontend, backend.embed, scorer, [windows[:1]])
    first_window = time.perf_counter() - started
    results = []
    for size in options.batches:
        frontend.reset()
        run_stages(frontend, backend.embed, scorer, [windows[:size]])
        timed = windows[size : size + options.windows]
        latencies: list[float] = []
        wall = time.perf_counter()
        times = run_stages(frontend, backend.embed, scorer, batched(timed, size), latencies)
        wall = time.perf_counter() - wall
        per_s = len(timed) / wall
        results.append(BatchResult(
            batch=size, windows=len(timed), p50_ms=1e3 * float(np.percentile(latencies, 50)),
            p99_ms=1e3 * float(np.percentile(latencies, 99)), windows_per_s=per_s,
            real_time_factor=per_s * hop / rate, inference_share=times.inference / wall))
    model_file = getattr(backend, "model_file", bundle.model(precision).path)
    return PrecisionResult(precision=precision, backend=backend.name, model_file=model_file,
                           time_to_first_window_s=first_window, peak_rss_mib=peak_rss_mb(), batches=results)


def _bench_child(options: BenchOptions, precision: str) -> dict[str, Any]:
    return asdict(bench_precision(options, precision))


def backend_for(key: str) -> tuple[str, str]:
    """(backend, precision) that runs the model stored under manifest ``key``: ``trt-fp16`` -> (trt, fp16)."""
    if key.startswith(TRT_KEY_PREFIX):
        return "trt", key.removeprefix(TRT_KEY_PREFIX)
    return "ort", key


def runnable_models(bundle: Bundle, requested: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """(manifest keys to time, {key: why it is skipped}).

    Requested keys must all run (an engine without TensorRT is an error); by default every model runs
    except engines on a machine without TensorRT, which are listed as skipped with the reason.
    """
    for key in requested:
        bundle.model(key)
        if backend_for(key)[0] == "trt":
            require_tensorrt()
    if requested:
        return requested, {}
    keys, skipped = [], {}
    for key in bundle.manifest.models:
        if backend_for(key)[0] == "trt":
            try:
                require_tensorrt()
            except EdgeError as e:
                skipped[key] = e.message
                continue
        keys.append(key)
    return tuple(keys), skipped


def run_bench(options: BenchOptions) -> tuple[list[PrecisionResult], dict[str, str]]:
    """Every requested model, each in a fresh spawned process; also the models skipped and why."""
    bundle = open_bundle(options.bundle)
    precisions, skipped = runnable_models(bundle, options.precisions)
    context = multiprocessing.get_context("spawn")
    results = []
    for precision in precisions:
        with context.Pool(1) as pool:
            raw = pool.apply(_bench_child, (options, precision))
        raw["batches"] = [BatchResult(**b) for b in raw["batches"]]
        results.append(PrecisionResult(**raw))
    return results, skipped


def parse_batches(text: str) -> tuple[int, ...]:
    """``"1,4,8"`` -> (1, 4, 8); anything else is a :class:`ConfigError`."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as e:
        raise ConfigError(f"--batch {text!r} is not a comma-separated list of integers", "e.g. --batch 1,4,8") from e
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"--batch {text!r} needs batch sizes of at least 1", "e.g. --batch 1,4,8")
    return sizes


def print_tables(info: dict[str, str], options: BenchOptions, results: list[PrecisionResult]) -> None:
    """One rich table per precision, under a machine header."""
    from rich.table import Table

    header = ", ".join(f"{k} {v}" for k, v in info.items())
    stdout.print(f"[bold]{header}[/]\nwindow {options.window_s:g} s, hop {options.hop_s:g} s, "
                 f"threads {options.threads or 'ORT default'}, audio {options.audio or 'seeded noise'}")
    for result in results:
        table = Table(title=f"{result.precision} · {result.backend} · {result.model_file} · first window "
                            f"{result.time_to_first_window_s:.2f} s · peak RSS {result.peak_rss_mib:.0f} MiB")
        for column in ("batch", "windows", "p50 ms/window", "p99 ms/window", "windows/s", "real-time ×",
                       "in model"):
            table.add_column(column, justify="right")
        for b in result.batches:
            table.add_row(str(b.batch), str(b.windows), f"{b.p50_ms:.1f}", f"{b.p99_ms:.1f}",
                          f"{b.windows_per_s:.2f}", f"{b.real_time_factor:.1f}", f"{100 * b.inference_share:.0f} %")
        stdout.print(table)


@report_errors
def bench_command(
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Bundle folder made by `biolingual-export`.")],
    precision: Annotated[list[str] | None, typer.Option(
        help="Model(s) to time by manifest key (fp32, int8, trt-fp16 …); default: every one this unit can run.")]
    = None,
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,4,8",
    windows: Annotated[int, typer.Option(help="Windows timed per batch size.")] = DEFAULT_WINDOWS,
    window: Annotated[float, typer.Option(help="Window length in seconds.")] = 10.0,
    hop: Annotated[float, typer.Option(help="Hop between window starts in seconds.")] = 5.0,
    threads: Annotated[int | None, typer.Option(help="CPU threads for inference (default: ORT's choice).")] = None,
    audio: Annotated[Path | None, typer.Option(help="Recording to analyse (default: seeded noise).")] = None,
    optimized: Annotated[bool, typer.Option(help="Use the bundle's ORT-optimised graph if present.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Per-window latency (p50/p99), windows/s, real-time factor, time to first window and peak RSS."""
    if windows < 1:
        raise ConfigError("--windows must be at least 1", "pass a positive integer")
    if not 0 < hop <= window:
        raise ConfigError(f"--hop {hop:g} s must be > 0 and <= --window ({window:g} s)", "use a shorter hop")
    options = BenchOptions(bundle=bundle, precisions=tuple(precision or ()), batches=parse_batches(batch),
                           windows=windows, window_s=window, hop_s=hop, threads=threads, audio=audio,
                           optimized=optimized)
    results, skipped = run_bench(options)
    info = machine_info()
    if json_out:
        print(json.dumps({"machine": info, "options": {**asdict(options), "bundle": str(bundle),
                                                       "audio": str(audio) if audio else None},
                          "results": [asdict(r) for r in results], "skipped": skipped}, indent=2))
    else:
        print_tables(info, options, results)
        for key, reason in skipped.items():
            stdout.print(f"[yellow]{key} skipped:[/] {reason}")
