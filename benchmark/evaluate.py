"""`mfm benchmark eval`: score a run's outputs against the benchmark's ground truth, per task, like Table 6.

    mfm benchmark eval --bench bench.lance --outputs runs/ckpt --out reports/ckpt
        --inception-weights pt_inception-2015-12-05-6726825d.pth --lpips-weights alexnet-owt-7be5be79.pth

Per task: FID between the outputs' and the ground truths' frames (one set per task), PSNR, SSIM and LPIPS
per frame averaged over frames then samples, and the no-reference temporal figures of the outputs
(motion smoothness, frame-to-frame consistency; videos only). The ground truth gets a row of its own
temporal figures for reference. `--metrics` adds VBench's no-prompt dimensions (`benchmark/vbench`), each
from local weights named by `--metric-weights KEY=PATH`, for the tasks the paper reports them for
(`--metric-tasks`, default T2V, I2V, VINP, VOUTP, FLF2V, VCOLOR), the ground truth's beside them:

    --metrics vbench --metric-weights dino=dino-vitb16/ clip_b32=clip-vit-base-patch32/
        clip_l14=clip-vit-large-patch14/ laion_head=sa_0_4_vit_l_14_linear.pth raft=raft_large_C_T_V1.pth
        interpolator=INTERPOLATOR.safetensors musiq=musiq_spaq_ckpt-358bb6af.pth

Reference metrics compare with the source clip: for T2V/T2I that is the
clip whose caption was the prompt, for VEDIT/IEDIT the unedited source.

Writes to OUT: results.md and results.csv (the table), per_sample.csv, results.json (also the checkpoint's
model config, the table and version the run used, the feature-network weights), and report.html with
input / output / ground-truth frame strips per task (strips/*.png).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import lance
import torch
from PIL import Image, ImageDraw, ImageFont

from benchmark import metrics, vbench
from benchmark.run import RUN_RECORD, STEPS_RECORD, output_path
from benchmark.table import Sample, check_benchmark_schema, read_sample_media, read_samples
from model.task_inputs import read_media_file
from model.tasks import TASKS
from pipeline.contract.frames import tensor_to_frames

COLUMNS = [  # (key, header, format, better)
    ("fid", "FID↓", "{:.2f}"),
    ("psnr", "PSNR↑", "{:.2f}"),
    ("ssim", "SSIM↑", "{:.3f}"),
    ("lpips", "LPIPS↓", "{:.3f}"),
    ("motion", "Motion↑", "{:.3f}"),
    ("consistency", "Consist.↑", "{:.3f}"),
]
NOTE = (
    "FID: outputs vs ground truth over each task's frames. PSNR, SSIM, LPIPS: per frame against the source clip "
    "(for T2V/T2I the clip whose caption is the prompt, for editing the unedited source), averaged over frames "
    "then samples. Motion: motion smoothness, 1 - mean |f_t - (f_t-1 + f_t+1)/2|. Consist.: 1 - mean LPIPS of "
    "consecutive frames. Grey rows: the ground truth's own temporal figures. n: samples scored / in the table."
)
VBENCH_NOTE = (
    " VBench columns (benchmark/vbench, as VBench defines them, on the uint8 frames; higher is better, 0-1): "
    "{names}; for tasks {tasks}."
)
STRIP_FRAMES = 6
STRIP_HEIGHT = 96


@dataclass
class TaskScores:
    """What one task accumulates over its samples."""

    gen_features: list[torch.Tensor] = field(default_factory=list)
    gt_features: list[torch.Tensor] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    dims: dict[str, list[vbench.VideoScore]] = field(default_factory=dict)  # "name" / "gt_name" -> per video


def _frames01(video: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) in [-1, 1] -> (T, 3, H, W) in [0, 1]."""
    return (video.transpose(0, 1) + 1) / 2


def fid_frame_indices(n_frames: int, per_video: int | None) -> list[int]:
    """Evenly spaced frames of a video for FID (all when `per_video` is None or large enough)."""
    if per_video is None or per_video >= n_frames:
        return list(range(n_frames))
    return sorted({round(i * (n_frames - 1) / max(1, per_video - 1)) for i in range(per_video)})


def score_sample(nets: dict, gen: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """Per-sample metrics of one output against its ground truth, both (T, 3, H, W) in [0, 1]."""
    return {
        "psnr": float(metrics.psnr(gen, gt).mean()),
        "ssim": float(metrics.ssim(gen, gt).mean()),
        "lpips": float(metrics.lpips_distance(nets["lpips"], gen, gt).mean()),
        "motion": metrics.motion_smoothness(gen),
        "consistency": metrics.frame_consistency(nets["lpips"], gen),
        "gt_motion": metrics.motion_smoothness(gt),
        "gt_consistency": metrics.frame_consistency(nets["lpips"], gt),
    }


def _sha(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files in name order (a transformers model folder)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def score_dimensions(dims: dict[str, vbench.Dimension], gen: torch.Tensor, gt: torch.Tensor, fps: float,
                     scores: TaskScores) -> dict[str, float]:
    """Each VBench dimension on the output and the ground truth, both (T, 3, H, W) in [0, 1]; appends the
    per-video scores to `scores.dims` and returns {name: value, gt_name: value}."""
    out = {}
    for prefix, video in (("", gen), ("gt_", gt)):
        frames = vbench.to_uint8(video)  # (T, 3, H, W) uint8, as VBench reads a video file
        for name, dim in dims.items():
            result = dim(frames, fps)
            scores.dims.setdefault(prefix + name, []).append(result)
            out[prefix + name] = result.value
    return out


def table_columns(dimensions: list[str]) -> list[tuple[str, str, str]]:
    """The report's columns: COLUMNS, then one per VBench dimension asked for."""
    return COLUMNS + [(name, vbench.DIMENSIONS[name].header, "{:.4f}") for name in dimensions]


# --- frame strips ---


def _strip_cells(video: torch.Tensor, columns: list[int]) -> list[Image.Image]:
    """Chosen frames of (3, T, H, W) [-1, 1] as PIL images STRIP_HEIGHT tall."""
    h, w = video.shape[-2:]
    size = (max(1, round(w * STRIP_HEIGHT / h)), STRIP_HEIGHT)
    rgb = tensor_to_frames(video)
    return [Image.fromarray(rgb[i]).resize(size, Image.Resampling.BILINEAR) for i in columns]


def frame_strip(sample: Sample, rows: dict[str, torch.Tensor]) -> Image.Image:
    """Rows (input / output / ground truth) of evenly spaced frames, labelled, one picture."""
    t = next(iter(rows.values())).shape[1]
    columns = fid_frame_indices(t, STRIP_FRAMES)
    font = ImageFont.load_default(size=12)
    label_w, pad, title_h = 92, 4, 20
    cells = {name: _strip_cells(video, columns) for name, video in rows.items()}
    cell_w = cells[next(iter(cells))][0].width
    width = label_w + len(columns) * (cell_w + pad)
    height = title_h + len(rows) * (STRIP_HEIGHT + pad)
    strip = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(strip)
    draw.text((pad, 3), f"{sample.sample_id}  frames {columns}", fill=(20, 20, 20), font=font)
    for r, (name, images) in enumerate(cells.items()):
        y = title_h + r * (STRIP_HEIGHT + pad)
        draw.text((pad, y + STRIP_HEIGHT // 2 - 6), name, fill=(20, 20, 20), font=font)
        for c, image in enumerate(images):
            strip.paste(image, (label_w + c * (cell_w + pad), y))
    return strip


# --- the whole evaluation ---


def evaluate(
    bench_uri: str,
    outputs: str | Path,
    out_dir: str | Path,
    inception_weights: str | Path,
    lpips_weights: str | Path,
    fid_frames: int | None = None,
    strips_per_task: int = 1,
    method: str | None = None,
    device: str = "cpu",
    log=print,
    dimensions: list[str] = (),
    dimension_weights: dict[str, Path] | None = None,
    dimension_tasks: list[str] | None = None,
) -> dict:
    """Score every sample that has an output; write the tables and the report; return the results.

    `dimensions`: VBench dimension names (or "vbench" for all) with their `dimension_weights` keys; they run
    on `dimension_tasks` (default `vbench.PAPER_TASKS`; "all": every task)."""
    outputs, out_dir = Path(outputs), Path(out_dir)
    dimension_weights = dimension_weights or {}
    dimensions = vbench.check_request(list(dimensions), dimension_weights)  # before any work
    dimension_tasks = list(vbench.PAPER_TASKS if dimension_tasks is None else dimension_tasks)
    if "all" in dimension_tasks:
        dimension_tasks = list(TASKS)
    unknown_tasks = sorted(set(dimension_tasks) - set(TASKS))
    if unknown_tasks:
        raise ValueError(f"--metric-tasks {unknown_tasks}: not a registered task; choose from {[*TASKS, 'all']}")
    record_path = outputs / RUN_RECORD
    if not record_path.exists():
        raise FileNotFoundError(f"{outputs}: no {RUN_RECORD}; point --outputs at a `mfm benchmark run --out` folder")
    run = json.loads(record_path.read_text())
    ds = lance.dataset(bench_uri, version=run.get("bench_version"))  # the table version the run used
    build = check_benchmark_schema(ds.schema, bench_uri)
    method = method or Path(run["checkpoint"]).name
    nets = {"inception": metrics.load_inception(inception_weights, device),
            "lpips": metrics.load_lpips(lpips_weights, device)}
    dims = vbench.load_dimensions(dimensions, dimension_weights, device) if dimensions else {}
    columns = table_columns(dimensions)
    (out_dir / "strips").mkdir(parents=True, exist_ok=True)

    per_task = {task_id: TaskScores() for task_id in TASKS}
    missing: list[str] = []
    strips: dict[str, list[tuple[str, str, str]]] = {task_id: [] for task_id in TASKS}  # (picture, prompt, params)
    samples = read_samples(ds)
    unknown = sorted({s.task for s in samples} - set(TASKS))
    if unknown:
        raise ValueError(f"{bench_uri} has samples of tasks {unknown} that are not registered: load their "
                         f"plugins (--task-plugin; the build record lists {build.get('task_plugins')})")
    for sample in samples:
        path = output_path(outputs, sample)
        if not path.exists():
            missing.append(sample.sample_id)
            continue
        gt = read_sample_media(ds, sample, "gt")  # (3, T, H, W)
        gen = read_media_file(path)
        if gen.shape != gt.shape:
            raise ValueError(f"{path}: output shape {tuple(gen.shape)} != ground truth {tuple(gt.shape)}")
        gen01, gt01 = _frames01(gen), _frames01(gt)
        scores = per_task[sample.task]
        picks = fid_frame_indices(gt.shape[1], fid_frames)
        scores.gen_features.append(metrics.inception_features(nets["inception"], gen01[picks]))
        scores.gt_features.append(metrics.inception_features(nets["inception"], gt01[picks]))
        row = {"sample_id": sample.sample_id, "task": sample.task, **score_sample(nets, gen01, gt01)}
        if sample.task in dimension_tasks:
            row |= score_dimensions(dims, gen01, gt01, sample.fps, scores)
        scores.rows.append(row)
        if len(strips[sample.task]) < strips_per_task:
            given = read_sample_media(ds, sample, "input")
            image = frame_strip(sample, {"input": given, "output": gen, "ground truth": gt})
            name = f"strips/{sample.sample_id}.png"
            image.save(out_dir / name)
            strips[sample.task].append((name, sample.prompt, sample.params))
        log(f"{sample.sample_id}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.rows[-1].items()
                                                 if isinstance(v, float)))

    table = []
    for task_id, scores in per_task.items():
        n_total = sum(s.task == task_id for s in samples)
        if not scores.rows:
            continue
        fid = metrics.frechet_distance(torch.cat(scores.gt_features), torch.cat(scores.gen_features))
        mean = {k: metrics.nanmean([r[k] for r in scores.rows]) for k, *_ in COLUMNS if k != "fid"}
        pooled = {name: vbench.pool(scores.dims.get(name, [])) for name in dimensions}
        table.append({"task": task_id, "method": method, "n": f"{len(scores.rows)}/{n_total}", "fid": fid, **mean,
                      **pooled})
        if TASKS[task_id].is_video or scores.dims:
            gt_row = {k: float("nan") for k, *_ in columns}
            if TASKS[task_id].is_video:
                gt_row |= {k: metrics.nanmean([r[f"gt_{k}"] for r in scores.rows]) for k in ("motion", "consistency")}
            gt_row |= {name: vbench.pool(scores.dims.get(f"gt_{name}", [])) for name in dimensions}
            table.append({"task": task_id, "method": "ground truth", "n": f"{len(scores.rows)}/{n_total}", **gt_row})

    results = {
        "bench": bench_uri, "bench_version": ds.version, "bench_build": build, "method": method,
        "checkpoint": run["checkpoint"], "model_config": run["model_config"], "sampling": run["sampling"],
        "defaults": run.get("defaults"), "steps_computed": steps_computed(outputs),
        "feature_weights": {"inception": {"path": str(inception_weights), "sha256": _sha(inception_weights)},
                            "lpips": {"path": str(lpips_weights), "sha256": _sha(lpips_weights)}},
        "vbench": {"dimensions": dimensions, "tasks": [t for t in dimension_tasks if t in TASKS],
                   "weights": {k: {"path": str(p), "sha256": _sha(p)} for k, p in dimension_weights.items()}},
        "fid_frames_per_video": fid_frames, "missing": missing, "table": table,
        "per_sample": [r for s in per_task.values() for r in s.rows],
    }  # fmt: skip
    write_reports(results, strips, out_dir)
    if missing:
        log(f"note: {len(missing)} samples have no output yet (first: {missing[:3]}); rows show n done/total")
    log(f"wrote {out_dir / 'results.md'}, {out_dir / 'results.csv'}, {out_dir / 'report.html'}")
    return results


# --- writing ---


def _fmt(value: float, spec: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else spec.format(value)


def markdown_table(table: list[dict], columns: list[tuple[str, str, str]] = COLUMNS) -> str:
    """Table 6's layout: Task | Method | reference metrics | no-reference metrics | n."""
    head = ["Task", "Method", *(h for _, h, _ in columns), "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    previous = None
    for row in table:
        task = row["task"].upper() if row["task"] != previous else ""
        previous = row["task"]
        cells = [task, row["method"], *(_fmt(row[k], spec) for k, _, spec in columns), row["n"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def steps_computed(outputs: Path) -> dict[str, str]:
    """Per task, the Euler steps computed of those run under step caching (from the run's steps.jsonl)."""
    path = outputs / STEPS_RECORD
    if not path.exists():
        return {}
    totals: dict[str, list[int]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        done = totals.setdefault(row["task"], [0, 0])
        done[0], done[1] = done[0] + row["computed"], done[1] + row["steps"]
    return {task: f"{computed}/{steps}" for task, (computed, steps) in sorted(totals.items())}


def _defaults_note(defaults: dict | None) -> str:
    """What None in the sampling settings stood for (the checkpoint's defaults, from run.json)."""
    if not defaults:
        return ""
    return (f" (None = the checkpoint's default: {defaults['steps']} steps, CFG {defaults['guidance']}, "
            f"{defaults['colorization_guidance']} for colorization)")


def _header(results: dict) -> list[str]:
    cfg = results["model_config"]
    return [
        f"benchmark: {results['bench']} (version {results['bench_version']}, {results['bench_build'].get('per_task')}"
        f" per task, {results['bench_build'].get('frames')} frames at {results['bench_build'].get('height')}x"
        f"{results['bench_build'].get('width')})",
        f"checkpoint: {results['checkpoint']} — {cfg['num_layers']} layers, {cfg['num_heads']}x{cfg['head_dim']} "
        f"heads, text_dim {cfg['text_dim']}",
        f"sampling: {results['sampling']}" + _defaults_note(results.get("defaults")),
        *([f"step cache: {results['steps_computed']}"] if results.get("steps_computed") else []),
        "feature networks: " + ", ".join(f"{k} {v['path']} (sha256 {v['sha256']})"
                                         for k, v in results["feature_weights"].items()),
        f"FID frames per video: {results['fid_frames_per_video'] or 'all'}; missing outputs: {len(results['missing'])}",
        *([f"VBench dimensions: {', '.join(vb['dimensions'])} on {', '.join(vb['tasks'])}; weights: "
           + ", ".join(f"{k} {v['path']} (sha256 {v['sha256']})" for k, v in vb["weights"].items())]
          if (vb := results.get("vbench", {})).get("dimensions") else []),
    ]


def _dimensions(results: dict) -> list[str]:
    return results.get("vbench", {}).get("dimensions", [])


def _note(results: dict) -> str:
    names = _dimensions(results)
    if not names:
        return NOTE
    tasks = ", ".join(t.upper() for t in results["vbench"]["tasks"])
    return NOTE + VBENCH_NOTE.format(names=", ".join(names), tasks=tasks)


def write_reports(results: dict, strips: dict[str, list[tuple[str, str, str]]], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = table_columns(_dimensions(results))
    keys = ["task", "method", "n", *(k for k, *_ in columns)]
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows({k: row[k] for k in keys} for row in results["table"])
    if results["per_sample"]:
        with open(out_dir / "per_sample.csv", "w", newline="") as f:
            names = list(dict.fromkeys(k for row in results["per_sample"] for k in row))  # VBench keys: some tasks
            writer = csv.DictWriter(f, fieldnames=names, restval="")
            writer.writeheader()
            writer.writerows(results["per_sample"])
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    md = ["# MfM-Benchmark results", "", *(f"- {line}" for line in _header(results)), "",
          markdown_table(results["table"], columns), "", _note(results), ""]
    (out_dir / "results.md").write_text("\n".join(md))
    (out_dir / "report.html").write_text(html_report(results, strips))


def html_report(results: dict, strips: dict[str, list[tuple[str, str, str]]]) -> str:
    esc = html.escape
    columns = table_columns(_dimensions(results))
    head = "".join(f"<th>{esc(h)}</th>" for h in ["Task", "Method", *(h for _, h, _ in columns), "n"])
    body = []
    for row in results["table"]:
        cells = [row["task"].upper(), row["method"], *(_fmt(row[k], spec) for k, _, spec in columns), row["n"]]
        cls = ' class="ref"' if row["method"] == "ground truth" else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
    sections = []
    for task_id, names in strips.items():
        if not names:
            continue
        task = TASKS[task_id]
        figures = "".join(f"<p class=prompt>prompt: {esc(prompt)}<br>condition: {esc(params)}</p>"
                          f'<img src="{esc(name)}" alt="{esc(name)}">' for name, prompt, params in names)
        sections.append(f"<section><h3>{esc(task_id.upper())} — {esc(task.prompt_name)}</h3>"
                        f"<p class=given>given: {esc(task.given)}</p>{figures}</section>")
    info = "".join(f"<li>{esc(line)}</li>" for line in _header(results))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>MfM-Benchmark report</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 12px 0 24px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; font-size: 13px; }}
td:first-child, td:nth-child(2), th {{ text-align: left; }}
tr.ref td {{ color: #777; }}
section {{ margin-bottom: 18px; }} h3 {{ margin: 4px 0; }} p.given, p.prompt {{ margin: 2px 0; color: #555; }}
p.note {{ font-size: 13px; color: #555; max-width: 900px; }}
img {{ display: block; margin: 4px 0; border: 1px solid #ddd; max-width: 100%; }}
ul {{ font-size: 13px; }}
</style></head><body>
<h1>MfM-Benchmark report: {esc(results['method'])}</h1>
<ul>{info}</ul>
<table><tr>{head}</tr>{''.join(body)}</table>
<p class=note>{esc(_note(results))}</p>
<h2>Input / output / ground truth per task</h2>
{''.join(sections)}
</body></html>
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bench", required=True, help="benchmark Lance table")
    p.add_argument("--outputs", required=True, help="a `mfm benchmark run --out` folder")
    p.add_argument("--out", required=True, help="folder for results.md / .csv / .json and report.html")
    p.add_argument("--inception-weights", required=True,
                   help="local FID Inception-V3 weights: torch-fidelity's pt_inception-*.pth, or safetensors")
    p.add_argument("--lpips-weights", required=True,
                   help="local LPIPS weights: a whole LPIPS state dict, or torchvision's alexnet-owt-*.pth")
    p.add_argument("--fid-frames", type=int, help="frames per video for FID, evenly spaced (default: all)")
    p.add_argument("--strips-per-task", type=int, default=1, help="samples per task shown in the report")
    p.add_argument("--method", help="name of the method in the tables (default: the checkpoint folder's name)")
    p.add_argument("--metrics", nargs="+", default=[], metavar="NAME",
                   help=f"VBench dimensions to add: {', '.join(vbench.DIMENSIONS)}, or {vbench.ALL} for all")
    p.add_argument("--metric-weights", nargs="+", default=[], metavar="KEY=PATH",
                   help="local weights of the --metrics dimensions (keys: dino, clip_b32, clip_l14, laion_head, "
                        "raft, interpolator, musiq; see benchmark/vbench/__init__.py)")
    p.add_argument("--metric-tasks", nargs="+", metavar="TASK",
                   help=f"tasks the --metrics run on (default: the paper's, {' '.join(vbench.PAPER_TASKS)}; all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def main(args: argparse.Namespace) -> int:
    try:
        evaluate(args.bench, args.outputs, args.out, args.inception_weights, args.lpips_weights, args.fid_frames,
                 args.strips_per_task, args.method, args.device, dimensions=args.metrics,
                 dimension_weights=vbench.parse_weights(args.metric_weights), dimension_tasks=args.metric_tasks)
    except (ValueError, FileNotFoundError) as e:
        print(f"mfm benchmark eval: {e}", file=sys.stderr)
        return 2
    print((Path(args.out) / "results.md").read_text())
    return 0
