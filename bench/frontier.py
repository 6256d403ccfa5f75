"""The speed–quality frontier of the sampling settings: a grid of (steps × guidance fraction × deep
feature reuse interval, UniPC) and every speed preset, priced in quality on the bundled model and
in time at full size on a GPU, drawn as one chart.

    # quality: the bundled model's held-out pairs (any device; the regressor is cached)
    PYTHONPATH=. python bench/frontier.py quality --out bench/frontier-quality.json
    # speed: synthesized full-size weights, fp16, compiled with CUDA graphs, 48 frames (a GPU)
    PYTHONPATH=.:bench python bench/frontier.py speed --official-json official.json --out speed.json
    # ... or split over two leases, each with its own official run; report and chart take both files
    PYTHONPATH=.:bench python bench/frontier.py speed --reuse 1 --official-json official.json --out speed1.json
    PYTHONPATH=.:bench python bench/frontier.py speed --reuse 2 3 --official-json official.json --out speed2.json
    # without a GPU: each point's full-size work counted, its seconds estimated from an earlier lease
    PYTHONPATH=. python bench/frontier.py work --out bench/frontier-estimated.json
    # the SVD VAE's decode against TAESD's, time and memory (a GPU)
    PYTHONPATH=. python bench/frontier.py decoders
    # the table, and the chart (matplotlib, a benchmark-only dependency): seconds per frame against
    # motion error and against PSNR to exact
    PYTHONPATH=. python bench/frontier.py report bench/frontier-quality.json speed.json
    PYTHONPATH=. python bench/frontier.py chart bench/frontier-quality.json speed.json
    # the H100 figures in the README: three leases' files, priced with one set of warm shared parts
    PYTHONPATH=. python bench/frontier.py chart bench/frontier-quality.json bench/frontier-speed-h100-1.json \
        bench/frontier-speed-h100-2.json bench/frontier-speed-h100-3.json --parts bench/frontier-parts-h100.json

Each point's seconds per frame is its own denoising, timed, plus the parts that do not depend on the
sampling settings (motion tokens, reference encoding, the VAE decode), timed warm once in the same run
(or taken from ``--parts FILE``, a JSON of those figures of the same device); with a tiny decoder
(TAESD's architecture; its speed needs no trained weights) in place of the VAE where the JSON says
``tiny``.
"""

import argparse
import itertools
import json
import time
from pathlib import Path

GRID = {"steps": (4, 6, 8, 12, 20), "guidance_until": (0.25, 0.5, 1.0), "deep_cache_interval": (1, 2, 3)}
GRID_SAMPLER = "unipc"


def settings_points() -> dict[str, dict]:
    """Point name → the sampling settings it overrides: every preset, then the grid."""
    from xnemo_core.sampling import SPEED_PRESETS, preset_settings

    points = {name: preset_settings(name) for name in SPEED_PRESETS}
    for steps, until, interval in itertools.product(*GRID.values()):
        name = f"{GRID_SAMPLER} {steps} steps, guidance {until:.0%}, reuse every {interval}"
        points[name] = {
            "sampler": GRID_SAMPLER,
            "steps": steps,
            "guidance_until": until,
            "deep_cache_interval": interval,
        }
    return points


def quality(args) -> None:
    """Every point's frames of the held-out pairs scored, and compared with ``exact``'s."""
    import torch

    from xnemo_core import evaluation as ev
    from xnemo_core import recipes
    from xnemo_core.portrait import animation_settings

    torch.manual_seed(0)
    recipe = recipes.recommended(args.model)
    pairs = ev.cross_pairs(args.pairs, args.frames, recipe["size"])
    regressor = ev.load_or_train_regressor(
        args.regressor, recipe["size"], args.device, steps=args.regressor_steps, batch=args.regressor_batch
    )
    pipeline = ev.load_pipeline(args.model, args.device)
    points = settings_points()
    methods = {
        name: ev.settings_method(pipeline, animation_settings(recipe, "exact", **chosen))
        for name, chosen in points.items()
    }
    table = ev.evaluate(methods, pairs, regressor, {name: "exact" for name in points if name != "exact"})
    result = {
        "model": str(args.model),
        "pairs": args.pairs,
        "frames": args.frames,
        "recipe": recipe,
        "points": {name: {"settings": points[name], **table[name]} for name in points},
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(ev.format_table(table))


def speed(args) -> None:
    """Every point's denoising timed on synthesized full-size weights (fp16, compiled unless
    ``--eager``), and the shared parts once: motion, reference, both decoders."""
    import torch
    from diffusers import AutoencoderTiny

    from pipeline_speed import inputs
    from xnemo_core.pipeline import AnimationSettings, XNeMoPipeline
    from xnemo_core.testing.synthetic_weights import preset_models

    models = preset_models(args.model_size).to(dtype=torch.float16)
    pipeline = XNeMoPipeline(models, device=args.device, compile="on" if args.compile else "off")
    base = AnimationSettings(height=args.size, width=args.size)
    portrait, face, driving = inputs(args.frames, args.size)
    result = {
        "device": torch.cuda.get_device_name() if pipeline.device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "frames": args.frames,
        "size": args.size,
        "compiled": args.compile,
        "points": {},
    }
    if args.official_json:
        result["official"] = json.loads(Path(args.official_json).read_text().strip().splitlines()[-1])
    timer = Timer(pipeline.device)
    motion, result["motion_s"], _ = timer.second(pipeline.encode_motion, driving)
    condition, result["reference_s"], _ = timer.second(pipeline.encode_reference, portrait, face, args.size, args.size)
    decoders = {"vae": models.vae, "tiny": AutoencoderTiny().to(pipeline.device, torch.float16).eval()}
    latents = condition.latents[:, :, None].expand(-1, -1, args.frames, -1, -1).contiguous()  # time is the same
    result["decode"] = {}
    for label, decoder in decoders.items():
        result["decode"][label] = _time_decode(timer, decoder, latents)
        print("decode", label, result["decode"][label], flush=True)
    timed = json.loads(Path(args.skip).read_text())["points"] if args.skip else {}
    wanted = {
        name: chosen
        for name, chosen in settings_points().items()
        if args.only in ("all", _kind(name)) and chosen["deep_cache_interval"] in args.reuse and name not in timed
    }
    result["warmup_s"] = {}
    for name, chosen in sorted(wanted.items(), key=lambda item: _timing_order(*item)):
        shapes = min(chosen["deep_cache_interval"], 2)  # every interval from 2 on runs the same call shapes
        if shapes not in result["warmup_s"]:
            _, result["warmup_s"][shapes], _ = timer(_warm_up, pipeline, base, portrait, face, driving, shapes)
        settings = AnimationSettings(**{**base.__dict__, **chosen})
        _, seconds, peak = timer(pipeline.denoise, condition, motion, settings)
        result["points"][name] = {"settings": chosen, "denoise_s": seconds, "denoise_peak_gib": peak}
        print(name, result["points"][name], flush=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")  # what is timed survives a cut-off run


EARLIER_H100 = {
    "device": "NVIDIA H100 80GB HBM3",
    "official_s_per_frame": 0.865,
    "timed_settings": {"sampler": "unipc", "steps": 12, "guidance_until": 0.5, "deep_cache_interval": 2},
    "timed_denoise_s": 4.73,
    "vae_decode_s": 1.39,
    "motion_and_reference_s": 0.2,
}
"""The one H100 lease that timed the ``fast`` preset of then (``timed_settings``) compiled, 48
frames at 512² (issue 33's): what ``work`` calibrates its estimates on."""
PUBLISHED_TAESD_S_PER_FRAME = 0.003
"""TAESD's decode as PersonaLive and a distilled X-NeMo report it (about 3 ms a frame)."""


def work(args) -> None:
    """Each point's denoiser work at full size, counted exactly (FLOPs of each call shape on the
    ``meta`` device, times the calls the settings make), and its seconds estimated at the throughput
    ``fast`` reached compiled on the H100 (:data:`EARLIER_H100`): a JSON shaped as ``speed``'s,
    marked ``estimated``, for ``report`` and ``chart`` until a GPU times the points."""
    from xnemo_core.official import OFFICIAL
    from xnemo_core.pipeline import AnimationSettings

    calls = _call_tflop()
    base = AnimationSettings(height=OFFICIAL["size"], width=OFFICIAL["size"])
    tflop = {
        name: _denoise_tflop(AnimationSettings(**{**base.__dict__, **chosen}), args.frames, calls)
        for name, chosen in settings_points().items()
    }
    timed = AnimationSettings(**{**base.__dict__, **EARLIER_H100["timed_settings"]})
    rate = _denoise_tflop(timed, args.frames, calls) / EARLIER_H100["timed_denoise_s"]
    result = {
        "device": EARLIER_H100["device"],
        "estimated": f"denoising at {rate:.0f} TFLOP/s (unipc 12 steps, compiled, in an earlier H100 lease); TAESD at "
        f"the published {PUBLISHED_TAESD_S_PER_FRAME * 1e3:.0f} ms a frame",
        "frames": args.frames,
        "size": OFFICIAL["size"],
        "official": {"s_per_frame": EARLIER_H100["official_s_per_frame"]},
        "motion_s": EARLIER_H100["motion_and_reference_s"],
        "reference_s": 0.0,
        "decode": {
            "vae": {"s": EARLIER_H100["vae_decode_s"] * args.frames / 48},
            "tiny": {"s": PUBLISHED_TAESD_S_PER_FRAME * args.frames},
        },
        "points": {
            name: {"settings": settings_points()[name], "denoise_tflop": round(work, 1), "denoise_s": work / rate}
            for name, work in tflop.items()
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}: {rate:.0f} TFLOP/s; " + ", ".join(f"{n} {t:.0f} TFLOP" for n, t in tflop.items()))


def _call_tflop() -> dict[tuple[int, bool], float]:
    """TFLOP of one full-size denoiser call on a 24-frame window, by (rows, whole step), counted on
    the ``meta`` device (no weights, no arithmetic)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counted = {}
    with torch.device("meta"):
        for rows in (1, 2):
            unet, inputs = meta_denoiser_call(rows)
            with FlopCounterMode(display=False) as whole:
                _, deep = unet(*inputs, keep_deep=True)
            with FlopCounterMode(display=False) as partial:
                unet(*inputs, deep_features=deep)
            counted[rows, True] = whole.get_total_flops() / 1e12
            counted[rows, False] = partial.get_total_flops() / 1e12
    return counted


def meta_denoiser_call(rows: int) -> tuple:
    """The full-size denoiser and the inputs of its call on one 24-frame window of 512² with
    ``rows`` rows (2: guided), built on the current default device (``meta``: shapes only)."""
    import torch

    from xnemo_core.config import XNeMoConfig
    from xnemo_core.models.reference import ReferenceUNet, capture_reference, project_reference
    from xnemo_core.models.unet3d import DenoisingUNet
    from xnemo_core.official import OFFICIAL_CONTEXT_FRAMES

    config = XNeMoConfig.official()
    width, frames, latent = config.unet["cross_attention_dim"], OFFICIAL_CONTEXT_FRAMES, 64
    unet = DenoisingUNet(config.unet, config.frame_modules)
    reference_unet = ReferenceUNet(**config.unet)
    tokens = capture_reference(reference_unet, torch.zeros(1, 4, latent, latent), torch.zeros(1, 1, width))
    inputs = (
        torch.zeros(rows, 4, frames, latent, latent),
        torch.tensor(500),
        torch.zeros(rows, 1, width),
        torch.zeros(rows, frames, 32, 16),
        project_reference(unet, tokens),
        slice(rows - 1, None),
    )
    return unet, inputs


def _denoise_tflop(settings, frames: int, calls: dict) -> float:
    """The denoiser's TFLOP for a video of ``frames`` frames (windows of the official 24)."""
    total = 0.0
    for step in range(settings.steps):
        rows = 2 if settings.guided(step, settings.steps) else 1
        whole = step % settings.deep_cache_interval == 0
        total += sum(len(window) / 24 * calls[rows, whole] for window in settings.windows(frames, 24))
    return total


def decoders(args) -> None:
    """The SVD VAE's decode against TAESD's, 48 frames at 512² in fp16 (random weights: the time
    and memory do not depend on them); the peak memory counts the weights, given apart."""
    import torch
    from diffusers import AutoencoderTiny

    from xnemo_core.builders import build_vae
    from xnemo_core.config import SVD_VAE
    from xnemo_core.models.group_norm import fuse_group_norm_silu

    device = torch.device(args.device)
    latents = torch.randn(1, 4, args.frames, args.size // 8, args.size // 8, device=device)
    timer = Timer(device)
    for label, build in (("vae", lambda: build_vae(SVD_VAE)), ("tiny", AutoencoderTiny)):
        decoder = build().to_empty(device=device).to(torch.float16).eval().requires_grad_(False)
        for tensor in decoder.state_dict().values():
            tensor.normal_(0, 0.02)
        fuse_group_norm_silu(decoder)  # as the pipeline decodes (a no-op for TAESD, which has no norms)
        weights = sum(t.numel() * t.element_size() for t in decoder.state_dict().values()) / 2**30
        for slice_frames in DECODE_SLICES if label == "vae" else (None,):
            timed = _time_decode(timer, decoder, latents, slice_frames)
            timed |= {"ms_per_frame": round(timed["s"] / args.frames * 1e3, 2), "weights_gib": round(weights, 3)}
            print(json.dumps({"decoder": label, "slice_frames": slice_frames or "auto", **timed}), flush=True)
        del decoder


def _time_decode(timer: "Timer", decoder, latents, slice_frames: int | None = None) -> dict:
    """A decoder's second decode of ``latents`` in the official chunks (the first loads kernels),
    ``slice_frames`` at a time (``None``: as the pipeline picks): seconds, peak GiB and whether the
    frames are finite."""
    from xnemo_core.decoding import decode_video
    from xnemo_core.official import OFFICIAL

    chunk = OFFICIAL["decode_chunk"]
    video, seconds, peak = timer.second(decode_video, decoder, latents, chunk, latents.device, slice_frames)
    return {"s": seconds, "peak_gib": peak, "finite": bool(video.isfinite().all())}


class Timer:
    """Seconds and peak device memory (GiB; 0 on the CPU) of a call, the device's queue drained around it."""

    def __init__(self, device):
        import torch

        self.cuda = device.type == "cuda"
        self.torch = torch

    def __call__(self, fn, *args):
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = fn(*args)
        if self.cuda:
            self.torch.cuda.synchronize()
        peak = self.torch.cuda.max_memory_allocated() / 2**30 if self.cuda else 0.0
        return out, round(time.perf_counter() - start, 3), round(peak, 2)

    def second(self, fn, *args):
        """The second of two calls: the first pays for loading kernels and tuning convolutions."""
        self(fn, *args)
        return self(fn, *args)


def _timing_order(name: str, chosen: dict) -> tuple:
    """The points without reuse first (two call shapes to compile, not four), and among them the
    quick presets first, then the grid by its steps, the official steps (``exact``) next to last,
    the grid's slowest points last: what a run cut short loses matters least."""
    from xnemo_core.official import OFFICIAL

    steps = chosen.get("steps", OFFICIAL["steps"])
    grid = _kind(name) == "grid"
    return (chosen["deep_cache_interval"] > 1, steps >= 20 and grid, grid or name == "exact", steps)


def _kind(name: str) -> str:
    return "grid" if name.startswith(GRID_SAMPLER + " ") else "presets"


def _warm_up(pipeline, base, portrait, face, driving, interval: int) -> None:
    """Every denoiser call shape the points of a reuse interval run (whole steps; with reuse, whole
    steps that keep the deep features and steps on reused features; guided and not), compiled
    before the first such point is timed: 24 frames are one window of the 48-frame runs' length."""
    from xnemo_core.pipeline import AnimationSettings

    motion = pipeline.encode_motion(driving[:24])
    condition = pipeline.encode_reference(portrait, face, base.height, base.width)
    settings = AnimationSettings(**{**base.__dict__, "steps": 4, "guidance_until": 0.5, "sampler": GRID_SAMPLER})
    settings.deep_cache_interval = interval
    pipeline.denoise(condition, motion, settings)


def price_points(speed: dict, parts: dict | None = None) -> None:
    """Each point's whole video time per frame, by decoder: its denoising plus the parts every point
    shares (the run's own, or ``parts``: a JSON with the same ``motion_s``, ``reference_s`` and
    ``decode`` keys); and the official pipeline's of the same run, to take ratios across runs."""
    parts = parts or speed
    shared = {label: parts["motion_s"] + parts["reference_s"] + timed["s"] for label, timed in parts["decode"].items()}
    for point in speed["points"].values():
        point["s_per_frame"] = {label: (point["denoise_s"] + s) / speed["frames"] for label, s in shared.items()}
        point["official_s_per_frame"] = speed.get("official", {}).get("s_per_frame")


def load_speed(paths: list[str], parts_path: str | None = None) -> dict:
    """Speed files of several runs (one machine kind, e.g. two leases timing different points) as
    one: the first file's header, every file's points (a later file's timing of a point replaces an
    earlier one), each priced within its own run or with the shared parts of ``parts_path``."""
    runs = [json.loads(Path(path).read_text()) for path in paths]
    parts = json.loads(Path(parts_path).read_text()) if parts_path else None
    devices = {run["device"] for run in runs} | ({parts["device"]} if parts else set())
    if len(devices) > 1:
        raise SystemExit(f"speed files of different devices cannot be drawn together: {sorted(devices)}")
    merged = {**runs[0], "points": {}}
    for run in runs:
        price_points(run, parts)
        merged["points"].update(run["points"])
    return merged


def seconds_per_frame(speed: dict, point: str, decoder: str = "vae") -> float:
    return speed["points"][point]["s_per_frame"][decoder]


def times_official(speed: dict, point: str, decoder: str = "vae") -> float | None:
    official = speed["points"][point]["official_s_per_frame"]
    return official / seconds_per_frame(speed, point, decoder) if official else None


def frontier(xs: list[float], ys: list[float]) -> list[int]:
    """Indices of the points no other point beats in both (lower is better on both axes), by ``x``."""
    order = sorted(range(len(xs)), key=lambda i: (xs[i], ys[i]))
    best, kept = float("inf"), []
    for i in order:
        if ys[i] < best:
            best = ys[i]
            kept.append(i)
    return kept


DECODERS = ("vae", "tiny")
DECODE_SLICES = (None, 1, 2, 4, 8, 25)
"""Frames per slice ``decoders`` times the VAE at (``None``: as the pipeline picks from free memory; 25:
the whole official chunk)."""
QUALITY_BOUND = 0.03
"""How far above ``exact``'s a point's motion error and identity leakage may go (issue 40's bound)."""


def _scores(path: str) -> dict:
    """The quality file's scores of each point as it is defined now, found by its settings (a
    preset added or changed after the scoring run takes the scores of the grid point it equals)."""
    scored = json.loads(Path(path).read_text())["points"]
    by_settings = {json.dumps(point["settings"], sort_keys=True): point for point in scored.values()}
    return {
        name: by_settings[key]
        for name, chosen in settings_points().items()
        if (key := json.dumps(chosen, sort_keys=True)) in by_settings
    }


def report(args) -> None:
    """A Markdown table of every point measured in both files, fastest first, and the fastest
    point within :data:`QUALITY_BOUND` of ``exact``."""
    quality_table = _scores(args.quality)
    speed_table = load_speed(args.speed, args.parts)
    exact = quality_table["exact"]
    rows = []
    for name in (n for n in quality_table if n in speed_table["points"]):
        scores = quality_table[name]
        motion, leakage = (scores[key] - exact[key] for key in ("motion_error", "identity_leakage"))
        seconds = {decoder: seconds_per_frame(speed_table, name, decoder) for decoder in DECODERS}
        ratios = {decoder: times_official(speed_table, name, decoder) for decoder in DECODERS}
        within = motion <= QUALITY_BOUND and leakage <= QUALITY_BOUND
        rows.append((seconds["vae"], name, seconds, ratios, motion, leakage, scores.get("psnr_vs_exact"), within))
    print(
        "| point | s / frame (VAE) | × official | s / frame (TAESD) | × official | motion error | leakage "
        "| PSNR vs exact | within bound |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for _, name, seconds, ratios, motion, leakage, psnr_exact, within in sorted(rows):
        shown = {d: f"{ratio:.2f}" if (ratio := ratios[d]) else "–" for d in DECODERS}
        print(
            f"| {name} | {seconds['vae']:.4f} | {shown['vae']} | {seconds['tiny']:.4f} | {shown['tiny']} "
            f"| {motion:+.4f} | {leakage:+.4f} | {f'{psnr_exact:.2f}' if psnr_exact else '–'} "
            f"| {'yes' if within else 'no'} |"
        )
    for decoder in DECODERS:
        best = min((row for row in rows if row[-1]), key=lambda row: row[2][decoder])
        ratio = f" ({best[3][decoder]:.2f}× official)" if best[3][decoder] else ""
        print(
            f"fastest within +{QUALITY_BOUND} of exact, {decoder} decoder: {best[1]}, "
            f"{best[2][decoder]:.4f} s/frame{ratio}"
        )


def chart(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality_table = _scores(args.quality)
    speed_table = load_speed(args.speed, args.parts)
    official = speed_table.get("official", {}).get("s_per_frame")
    names = [name for name in quality_table if name in speed_table["points"]]
    figure, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    panels = (
        ("motion_error", "motion error on the bundled model (lower is better)", False),
        ("psnr_vs_exact", "PSNR against exact's frames, dB (higher is better)", True),
    )
    for axis, (metric, label, higher) in zip(axes, panels):
        for decoder, marker in (("vae", "o"), ("tiny", "^")):
            xs = [seconds_per_frame(speed_table, name, decoder) for name in names]
            ys = [quality_table[name].get(metric, float("nan")) for name in names]
            known = [i for i, y in enumerate(ys) if y == y]
            sign = -1 if higher else 1
            edge = frontier([xs[i] for i in known], [sign * ys[i] for i in known])
            grid = [i for i in known if _kind(names[i]) == "grid"]
            axis.scatter(
                [xs[i] for i in grid],
                [ys[i] for i in grid],
                marker=marker,
                s=14,
                alpha=0.35,
                label="grid, VAE decode" if decoder == "vae" else "grid, TAESD decode",
            )
            path = [known[i] for i in edge]
            axis.plot([xs[i] for i in path], [ys[i] for i in path], lw=1, alpha=0.7)
            for i in known:
                if _kind(names[i]) == "presets":
                    axis.scatter(xs[i], ys[i], marker=marker, s=60, color="black", zorder=3)
                    if decoder == "vae":
                        axis.annotate(names[i], (xs[i], ys[i]), fontsize=9, xytext=(5, 5), textcoords="offset points")
        if official:
            for times in (1, 5, 10):
                axis.axvline(official / times, color="grey", lw=0.6, ls="--")
                axis.text(
                    official / times,
                    axis.get_ylim()[1],
                    f"{times}× official",
                    fontsize=7,
                    rotation=90,
                    va="top",
                    ha="right",
                    color="grey",
                )
        axis.set_xscale("log")
        timed = "estimated " if "estimated" in speed_table else ""
        axis.set_xlabel(
            f"{timed}seconds per frame, {speed_table['device']}, {speed_table['size']}², {speed_table['frames']} frames"
        )
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    title = "X-NeMo sampling settings: speed against quality (UniPC grid: steps × guidance × reuse)"
    if "estimated" in speed_table:
        title += f"\ntimes estimated from each point's counted work:\n{speed_table['estimated']}"
    untimed = len(quality_table) - len(names)
    if untimed:
        title += f"\n{untimed} scored points not timed, not drawn"
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    scoring = _command(commands, "quality", quality, "score every point on the bundled model's held-out pairs")
    scoring.add_argument("--model", type=Path, default=Path("bundled/models/xnemo-synthetic-128"))
    scoring.add_argument("--pairs", type=int, default=16)
    scoring.add_argument("--frames", type=int, default=8)
    scoring.add_argument("--device", default="cpu")
    scoring.add_argument("--regressor", type=Path, default=Path("eval/regressor-cpu.pt"))
    scoring.add_argument("--regressor-steps", type=int, default=600, help="training budget when not cached")
    scoring.add_argument("--regressor-batch", type=int, default=64)
    scoring.add_argument("--out", default="bench/frontier-quality.json")
    timing = _full_size(_command(commands, "speed", speed, "time every point at full size on the GPU"))
    timing.add_argument("--only", choices=("all", "presets", "grid"), default="all")
    timing.add_argument("--eager", dest="compile", action="store_false")
    timing.add_argument(
        "--reuse", type=int, nargs="+", default=[1, 2, 3], help="only points of these reuse intervals (1: none)"
    )
    timing.add_argument("--skip", help="an earlier run's speed JSON: its points are not timed again")
    timing.add_argument("--model-size", default="official", help="synthesized model size (tiny: a smoke test)")
    timing.add_argument("--official-json", help="bench_official.py's result of the same machine")
    timing.add_argument("--out", default="frontier-speed.json")
    _full_size(_command(commands, "decoders", decoders, "time the VAE's decode against TAESD's (a GPU)"))
    counting = _command(commands, "work", work, "count each point's full-size work and estimate its seconds")
    counting.add_argument("--frames", type=int, default=48)
    counting.add_argument("--out", default="bench/frontier-estimated.json")
    _measured(_command(commands, "report", report, "print the table of both files and the fastest point in bound"))
    drawing = _measured(_command(commands, "chart", chart, "draw the frontier from the two JSON files"))
    drawing.add_argument("--out", default="bench/frontier.png")
    args = parser.parse_args()
    args.run(args)


def _command(commands, name: str, run, description: str) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=description)
    command.set_defaults(run=run)
    return command


def _full_size(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
    command.add_argument("--frames", type=int, default=48)
    command.add_argument("--size", type=int, default=512)
    command.add_argument("--device", default="cuda")
    return command


def _measured(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
    command.add_argument("quality", help="frontier.py quality's JSON")
    command.add_argument("speed", nargs="+", help="frontier.py speed's JSON files of one device (or work's estimate)")
    command.add_argument(
        "--parts", help="price every point with this JSON's motion, reference and decode seconds (of the same device)"
    )
    return command


if __name__ == "__main__":
    main()
