"""Self-training (CROP step 6) on the shared data, accuracy and speed in one run:

1. projection: `crop project` with its defaults (Apertium + the English tagger fitted to en/train.jsonl, cached in
   benchmarks/results/models/en-conll) on raw/{es,ca,gl}.txt (the student's target data), and end to end on the dev
   sets' target sentences (id, lang, tokens only: never their gold English), scored with seqeval against the gold
   tags: the "projected" F1, the teacher's. Outputs are cached in benchmarks/results/cache/ under a key of the
   input's, the English tagger's and the options' hashes (--no-cache projects again).
2. the spaCy student trained with `run_selftraining` (L_src = en/train.jsonl, L_tgt = the raw projections, the gold
   dev sets choosing the best epoch and round, the dev projections combined with the student): per dev language
   the student's and the combined labels' F1 after each round, and each round's training time.
3. speed: the student (`StudentTagger.tag`) next to mode crop (`CropPipeline`, the same engines as the projection)
   in-process, one sentence per call and batched; and the tagger service (`crop serve tagger` on loopback, the
   student in CROP_TAGGER_STUDENT) answering one sentence per request, sequentially, in mode "student" and mode
   "crop": p50 latency, requests/s and their ratio.

    python benchmarks/selftrain.py [--rounds 2] [--epochs 6] [--batch-size 64] [--combine projection-first]
                                   [--relabel-kept] [--min-entity-score 0] [--no-speed] [--speed-sentences 40]
                                   [--name selftrain] [--output FOLDER]
    python benchmarks/selftrain.py --student FOLDER --name selftrain-speed   # speed only, of a trained student

JSON on stdout and in benchmarks/results/<name>.json; a markdown table on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import LANGS, emit, english_tagger, load_dev, serve_tagger, shared_data

import crop
from crop.io import sentence_from_record
from crop.train.evaluate import evaluate
from crop.train.selftrain import SelfTrainConfig, run_selftraining
from crop.train.students.base import StudentConfig

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = RESULTS / "cache" / "projections"


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ projection


def _hash_folder(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def project_files(jobs: list[tuple[str, Path, str]], tagger_model: Path, use_cache: bool, workers: int
                  ) -> dict[str, tuple[Path, dict]]:
    """`crop project` (its defaults, the English tagger fitted to en/train.jsonl) on each (key, input, lang):
    key -> (output JSONL, run stats with "seconds" and "cached"). Runs `workers` projections at once."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tagger_hash = _hash_folder(tagger_model)[:16]
    out: dict[str, tuple[Path, dict]] = {}
    pending: list[tuple[str, Path, Path, list[str]]] = []
    for key, path, lang in jobs:
        cmd = ["project", "--src-lang", lang, "--tagger", f"spacy:{tagger_model}"]
        h = hashlib.sha256(path.read_bytes())
        h.update(json.dumps([cmd[:3], tagger_hash, crop.__version__]).encode())
        dest = CACHE / f"{key}-{h.hexdigest()[:16]}.jsonl"
        stats = dest.with_suffix(".stats.json")
        if use_cache and dest.exists() and stats.exists():
            out[key] = (dest, {**json.loads(stats.read_text()), "cached": True})
            continue
        pending.append((key, dest, stats, [*cmd, "--input", str(path), "--output", str(dest), "--stats", str(stats)]))
    running: list[tuple[str, Path, Path, subprocess.Popen, float]] = []
    while pending or running:
        while pending and len(running) < workers:
            key, dest, stats, cmd = pending.pop(0)
            for p in (dest, stats):
                p.unlink(missing_ok=True)
            log(f"projecting {key} ...")
            proc = subprocess.Popen([sys.executable, "-c", "from crop.cli import main; main()", *cmd],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            running.append((key, dest, stats, proc, time.perf_counter()))
        for item in list(running):
            key, dest, stats, proc, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            err = proc.stderr.read() if proc.stderr else ""
            if proc.returncode != 0:
                raise RuntimeError(f"crop project failed on {key} ({proc.returncode}): {err[-2000:]}")
            summary = json.loads(stats.read_text())
            summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
            stats.write_text(json.dumps(summary, indent=2))
            out[key] = (dest, {**summary, "cached": False})
            log(f"projected {key}: {summary.get('sentences')} sentences in {summary['wall_seconds']} s, "
                f"{summary.get('status')}")
        time.sleep(0.5)
    return out


def dev_inputs(langs: list[str], folder: Path) -> dict[str, Path]:
    """The dev sets' target sentences with id, lang and tokens only (their gold English would make `crop project`
    project the gold labels instead of tagging its own translation)."""
    out = {}
    for lang in langs:
        path = folder / f"{lang}.dev.input.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for s in load_dev(lang):
                f.write(json.dumps({"id": s.id, "lang": lang, "tokens": s.tokens}, ensure_ascii=False) + "\n")
        out[lang] = path
    return out


def projected_scores(lang: str, projection: Path) -> dict:
    """seqeval P/R/F1 of a dev projection against the gold tags (a sentence missing or re-tokenized counts all
    O), and its kept share."""
    gold = {s.id: (s.tokens, s.tags or []) for s in load_dev(lang)}
    pred: dict[str, tuple[list[str], list[str]]] = {}
    kept = 0
    with open(projection, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            kept += r.get("status") == "kept"
            if r.get("id") in gold and len(r["tags"]) == len(gold[r["id"]][0]):
                pred[r["id"]] = (gold[r["id"]][0], r["tags"])
    for i, (tokens, _) in gold.items():
        pred.setdefault(i, (tokens, ["O"] * len(tokens)))
    rep = evaluate(gold, pred)
    return {"precision": round(rep.precision, 4), "recall": round(rep.recall, 4), "f1": round(rep.f1, 4),
            "kept": round(kept / len(gold), 4)}


# ------------------------------------------------------------------------------------------------------ speed


def _text_only(sentences: list) -> list:
    """The sentences as a client sends them (id and text): a dev sentence also carries its gold English, which
    `project_batch` would use instead of translating and tagging (gold-English mode), and mode crop would be
    timed without its two engines."""
    return [sentence_from_record({"id": s.id, "text": s.text}, s.lang) for s in sentences]


def speed_sentences(langs: list[str], per_lang: int) -> dict[str, list]:
    """The first `per_lang` dev sentences of each language (text only), the same in every speed measurement."""
    return {lang: _text_only(load_dev(lang)[:per_lang]) for lang in langs}


def warm_up_sentences(lang: str, n: int = 3) -> list:
    """The last `n` dev sentences of a language that have entities (text only): Apertium starts a language's
    labeled back-translation pipeline at its first sentence with entities, and that start (up to 1.7 s) belongs to
    no timed request."""
    return _text_only([s for s in load_dev(lang) if any(t != "O" for t in s.tags or [])][-n:])


def in_process_speed(student_folder: Path, tagger_model: Path, langs: list[str], per_lang: int,
                     student_repeats: int = 5) -> dict:
    """Sentences/s of the student and of mode crop on the same dev sentences' text, one per call and batched (64).
    The student's passes are repeated `student_repeats` times (one pass takes well under a second)."""
    from crop.pipeline import CropPipeline
    from crop.project import Projector, ProjectorConfig
    from crop.tag import load_tagger
    from crop.tag.student import StudentTagger
    from crop.translate import load_translator

    student = StudentTagger(student_folder)
    # mode crop as the tagger service runs it (partial projection, nothing discarded)
    pipe = CropPipeline(load_translator("apertium"), load_tagger(f"spacy:{tagger_model}"), Projector(ProjectorConfig(
        policy="partial", drop_all_o=False, langid=False, max_tokens=10**6)))
    sents = speed_sentences(langs, per_lang)
    n = sum(len(v) for v in sents.values())

    def timed(fn, repeats: int = 1) -> float:
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t0) / repeats

    def student_one() -> None:
        for lang, ss in sents.items():
            for s in ss:
                student.tag([s.text], lang)

    def student_batch() -> None:
        for lang, ss in sents.items():
            texts = [s.text for s in ss]
            for i in range(0, len(texts), 64):
                student.tag(texts[i:i + 64], lang)

    def crop_one() -> None:
        for ss in sents.values():
            for s in ss:
                pipe.project_batch([s])

    def crop_batch() -> None:
        for ss in sents.values():
            for i in range(0, len(ss), 64):
                pipe.project_batch(ss[i:i + 64])

    for lang in langs:  # first-call costs out of the timings (Apertium starts its pipes per language pair)
        warm = warm_up_sentences(lang)
        student.tag([s.text for s in warm], lang)
        pipe.project_batch(warm)
    out: dict = {"sentences": n}
    for name, fn in (("student_one_per_call", student_one), ("student_batched_64", student_batch),
                     ("crop_one_per_call", crop_one), ("crop_batched_64", crop_batch)):
        secs = timed(fn, student_repeats if name.startswith("student") else 1)
        out[name] = round(n / secs, 2)
        log(f"in-process {name}: {out[name]} sentences/s")
    out["ratio_one_per_call"] = round(out["student_one_per_call"] / out["crop_one_per_call"], 1)
    out["ratio_batched"] = round(out["student_batched_64"] / out["crop_batched_64"], 1)
    return out


def start_tagger(student_folder: Path, tagger_model: Path) -> tuple[subprocess.Popen, str]:
    env = {"CROP_TAGGER_ENGINE": f"spacy:{tagger_model}", "CROP_TAGGER_STUDENT": str(student_folder),
           "CROP_TAGGER_STUDENT_POLL": "0", "CROP_TAGGER_MAX_QUEUE": "100000", "CROP_LOG_LEVEL": "WARNING"}
    return serve_tagger(env, unset=("CROP_TAGGER_TRANSLATOR",))  # the in-process Apertium, as the projection used


def _server_ms(headers: Any) -> float | None:
    """The service's own time of a request, from its `Server-Timing: app;dur=MS` header."""
    timing = headers.get("server-timing", "")
    return float(timing.split("dur=", 1)[1].split(",", 1)[0].split(";", 1)[0]) if "dur=" in timing else None


def sequential(url: str, items: list[tuple[str, str]], mode: str) -> dict:
    """One client, one sentence per request, each sent after the previous answer, on one keep-alive HTTP/1.1
    connection (http.client: a client that costs ~0.1 ms a request, so that the latency is the service's and the
    loopback's; `httpx_p50_ms` is the same requests through httpx, a heavier client)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    headers = {"Content-Type": "application/json"}

    def post(text: str, lang: str) -> tuple[http.client.HTTPResponse, bytes]:
        conn.request("POST", "/v1/tag", json.dumps({"text": text, "lang": lang, "mode": mode}), headers)
        r = conn.getresponse()
        return r, r.read()

    latencies: list[float] = []
    server: list[float] = []  # the service's own time (its Server-Timing header): no network, no client
    errors = 0
    modes = set()
    for lang in dict.fromkeys(lang for _, lang in items):  # warm-up: Apertium's pipes start per language
        for s in warm_up_sentences(lang):
            post(s.text, lang)
    t0 = time.perf_counter()
    for text, lang in items:
        t1 = time.perf_counter()
        r, body = post(text, lang)
        latencies.append(time.perf_counter() - t1)
        if r.status != 200:
            errors += 1
            continue
        modes.add(json.loads(body).get("mode"))
        ms = _server_ms(r.headers)
        if ms is not None:
            server.append(ms / 1000)
    wall = time.perf_counter() - t0
    conn.close()
    with httpx.Client(timeout=300) as client:
        via_httpx = []
        for text, lang in items:
            t1 = time.perf_counter()
            client.post(url + "/v1/tag", json={"text": text, "lang": lang, "mode": mode})
            via_httpx.append(time.perf_counter() - t1)
    q = statistics.quantiles(latencies, n=100)
    return {"requests": len(items), "errors": errors, "answered_in_mode": sorted(m for m in modes if m),
            "requests_per_second": round(len(items) / wall, 2), "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(q[98] * 1000, 2), "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
            "server_p50_ms": round(statistics.median(server) * 1000, 2) if server else None,
            "server_mean_ms": round(statistics.fmean(server) * 1000, 2) if server else None,
            "httpx_p50_ms": round(statistics.median(via_httpx) * 1000, 2)}


def service_speed(student_folder: Path, tagger_model: Path, langs: list[str], per_lang: int) -> dict:
    """Sequential single-sentence requests, the same sentences in both modes, each mode twice in turn (student,
    crop, student, crop: a change of load on the machine shows as a difference between the passes); the ratios are
    of the medians over both passes."""
    items = [(s.text, lang) for lang, ss in speed_sentences(langs, per_lang).items() for s in ss]
    proc, url = start_tagger(student_folder, tagger_model)
    try:
        info = httpx.get(url + "/v1/info", timeout=10).json()
        out: dict = {"student": info.get("student")}
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        floor = []  # the HTTP round trip alone (no engine, no queue): the floor both modes pay
        for _ in range(len(items)):
            t0 = time.perf_counter()
            conn.request("GET", "/health/live")
            conn.getresponse().read()
            floor.append(time.perf_counter() - t0)
        conn.close()
        out["health_p50_ms"] = round(statistics.median(floor) * 1000, 2)
        passes: dict[str, list[dict]] = {"student": [], "crop": []}
        for _ in range(2):
            for mode in ("student", "crop"):
                passes[mode].append(sequential(url, items, mode))
                log(f"service mode {mode}: {passes[mode][-1]}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for mode, runs in passes.items():
        out[mode] = {**runs[-1], "passes": runs}
        for key in ("p50_ms", "server_p50_ms", "httpx_p50_ms"):
            out[mode][key] = round(statistics.median(r[key] for r in runs), 2)
        out[mode]["requests_per_second"] = round(statistics.median(r["requests_per_second"] for r in runs), 2)
    st, cr = out["student"], out["crop"]
    out["p50_speedup"] = round(cr["p50_ms"] / st["p50_ms"], 1)
    out["httpx_p50_speedup"] = round(cr["httpx_p50_ms"] / st["httpx_p50_ms"], 1)
    out["throughput_speedup"] = round(st["requests_per_second"] / cr["requests_per_second"], 1)
    if st["server_p50_ms"] and cr["server_p50_ms"]:
        out["server_p50_speedup"] = round(cr["server_p50_ms"] / st["server_p50_ms"], 1)
    # the service's own time per sentence (Server-Timing), and requests/s and p50 at the client; the HTTP floor
    # that both modes pay on top is health_p50_ms
    out["student_at_least_10x_faster"] = out.get("server_p50_speedup", 0) >= 10 and out["throughput_speedup"] >= 10 \
        and out["p50_speedup"] >= 10
    return out


# ------------------------------------------------------------------------------------------------------ report


def mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def speed_lines(sp: dict) -> list[str]:
    ip, sv = sp["in_process"], sp["service"]
    st, cr = sv["student"], sv["crop"]
    return [f"in-process sentences/s: student {ip['student_one_per_call']} one per call, "
            f"{ip['student_batched_64']} batched; crop {ip['crop_one_per_call']} one per call, "
            f"{ip['crop_batched_64']} batched (x{ip['ratio_one_per_call']} / x{ip['ratio_batched']})",
            f"service, one sentence per request: p50 student {st['p50_ms']} ms, crop {cr['p50_ms']} ms "
            f"(x{sv['p50_speedup']}); {st['requests_per_second']} vs {cr['requests_per_second']} req/s "
            f"(x{sv['throughput_speedup']}); in the service (Server-Timing) {st['server_p50_ms']} vs "
            f"{cr['server_p50_ms']} ms (x{sv.get('server_p50_speedup')}); through httpx {st['httpx_p50_ms']} vs "
            f"{cr['httpx_p50_ms']} ms (x{sv['httpx_p50_speedup']}); HTTP floor {sv['health_p50_ms']} ms; "
            f"at least 10x: {sv['student_at_least_10x_faster']}"]


def markdown(report: dict, langs: list[str]) -> str:
    rounds = report["selftraining"]["rounds"]
    head = ["language", "projected"]
    for r in rounds:
        head += [f"student r{r['round']}", f"combined r{r['round']}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [*langs, "mean"]
    for lang in rows:
        if lang == "mean":
            cells = ["**mean**", f"{report['projection']['mean_f1']:.3f}"]
            for r in rounds:
                cells += [f"{r['student_mean_f1']:.3f}", f"{r['combined_mean_f1']:.3f}"]
        else:
            cells = [lang, f"{report['projection']['dev'][lang]['f1']:.3f}"]
            for r in rounds:
                cells += [f"{r['student'][lang]['f1']:.3f}", f"{r['combined'][lang]['f1']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("training seconds per round: " + ", ".join(f"r{r['round']} {r['seconds']}" for r in rounds)
                 + f"; best round {report['selftraining']['best_round']}")
    if report.get("speed"):
        lines += speed_lines(report["speed"])
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--langs", default=",".join(LANGS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--combine", default="projection-first", choices=["projection-first", "agreement"])
    ap.add_argument("--relabel-kept", action="store_true")
    ap.add_argument("--min-entity-score", type=float, default=0.0)
    ap.add_argument("--relabeled-weight", type=float, default=1.0)
    ap.add_argument("--source-ratio", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--options", default="{}", help="the spaCy student's options as JSON (width, depth, rows, ...)")
    ap.add_argument("--workers", type=int, default=2, help="projections run at once")
    ap.add_argument("--no-cache", action="store_true", help="project again even when a cached output exists")
    ap.add_argument("--retrain-tagger", action="store_true", help="fit the English tagger again")
    ap.add_argument("--no-speed", action="store_true", help="accuracy only")
    ap.add_argument("--speed-sentences", type=int, default=40,
                    help="dev sentences per language timed in both modes (in-process, and one request each to the "
                    "service)")
    ap.add_argument("--output", type=Path, default=None, help="the student's folder (default: a temporary one)")
    ap.add_argument("--name", default="selftrain", help="results file benchmarks/results/<name>.json")
    ap.add_argument("--student", type=Path, default=None,
                    help="a trained student folder: no training, the speed of this student only")
    args = ap.parse_args()
    langs = args.langs.split(",")
    t_start = time.perf_counter()

    tagger_model, fit = english_tagger(retrain=args.retrain_tagger)
    report: dict = {"translator": "apertium", "tagger": f"spacy fitted to en/train.jsonl ({tagger_model.name})",
                    "cores": os.cpu_count(), "crop_version": crop.__version__}
    if fit is not None:
        report["english_tagger_fit"] = fit

    # -- 1. projection
    work = Path(tempfile.mkdtemp(prefix="crop-selftrain-"))
    devs = dev_inputs(langs, work)
    jobs = [(f"dev-{lang}", devs[lang], lang) for lang in langs]
    jobs += [(f"raw-{lang}", shared_data() / "raw" / f"{lang}.txt", lang) for lang in langs]
    projections = project_files(jobs, tagger_model, not args.no_cache, args.workers)
    proj: dict = {"dev": {}, "raw": {}}
    for lang in langs:
        proj["dev"][lang] = projected_scores(lang, projections[f"dev-{lang}"][0])
        st = projections[f"raw-{lang}"][1]
        proj["raw"][lang] = {"sentences": st.get("sentences"), "status": st.get("status"),
                             "seconds": st.get("wall_seconds"), "cached": st["cached"],
                             "file": str(projections[f"raw-{lang}"][0].relative_to(HERE.parent))}
    proj["mean_f1"] = mean([proj["dev"][lang]["f1"] for lang in langs])
    report["projection"] = proj
    log("projected F1:", {lang: proj["dev"][lang]["f1"] for lang in langs}, "mean", proj["mean_f1"])

    if args.student is not None:
        report["speed"] = {"sentences_per_language": args.speed_sentences, "student": str(args.student),
                           "in_process": in_process_speed(args.student, tagger_model, langs, args.speed_sentences),
                           "service": service_speed(args.student, tagger_model, langs, args.speed_sentences)}
        shutil.rmtree(work, ignore_errors=True)
        emit(args.name, report)
        log("\n".join(speed_lines(report["speed"])))
        return

    # -- 2. self-training
    student_dir = args.output or work / "student"
    config = SelfTrainConfig(
        source=[str(shared_data() / "en" / "train.jsonl")],
        targets={lang: [str(projections[f"raw-{lang}"][0])] for lang in langs},
        dev={lang: str(shared_data() / "dev" / f"{lang}.dev.jsonl") for lang in langs},
        dev_projected={lang: str(projections[f"dev-{lang}"][0]) for lang in langs},
        student=StudentConfig(kind="spacy", epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                              options=json.loads(args.options)),
        rounds=args.rounds, source_ratio=args.source_ratio, combine=args.combine, relabel_kept=args.relabel_kept,
        min_entity_score=args.min_entity_score, relabeled_weight=args.relabeled_weight)

    def progress(p) -> None:
        if p.message:
            log(f"[selftrain] {p.message}" + (f" loss {p.loss:.1f}" if p.loss is not None else "")
                + (f" dev F1 {p.dev_f1}" if p.dev_f1 is not None else "")
                + (f" eta {p.eta_seconds}s" if p.eta_seconds is not None else ""))

    st = run_selftraining(config, student_dir, progress)
    rounds = []
    for r in st.rounds:
        rounds.append({
            "round": r.round, "seconds": r.seconds, "best_epoch": r.best_epoch,
            "train_sentences": r.train_sentences, "relabeled": r.relabeled,
            "student": {lang: {k: round(v, 4) for k, v in s.model_dump().items()} for lang, s in r.dev.items()},
            "combined": {lang: {k: round(v, 4) for k, v in s.model_dump().items()} for lang, s in r.combined.items()},
            "student_mean_f1": mean([r.dev[lang].f1 for lang in langs]),
            "combined_mean_f1": mean([r.combined[lang].f1 for lang in langs]),
            "epochs": [{"epoch": e.epoch, "loss": round(e.loss, 2), "seconds": round(e.seconds, 1),
                        "dev_f1": {lang: round(s.f1, 4) for lang, s in e.dev.items()}} for e in r.epochs],
        })
    best = rounds[st.best_round - 1]
    final = max(best["student_mean_f1"], best["combined_mean_f1"])
    report["selftraining"] = {
        "config": {"rounds": args.rounds, "epochs": args.epochs, "batch_size": args.batch_size,
                   "combine": args.combine, "relabel_kept": args.relabel_kept,
                   "min_entity_score": args.min_entity_score, "relabeled_weight": args.relabeled_weight,
                   "source_ratio": args.source_ratio, "seed": args.seed, "options": json.loads(args.options)},
        "data": st.data, "rounds": rounds, "best_round": st.best_round, "seconds": st.seconds,
        "checks": {
            "student_mean_within_0.02_of_projected": best["student_mean_f1"] >= proj["mean_f1"] - 0.02,
            "final_labels_at_least_projected": final >= proj["mean_f1"],
            "student_minus_projected": round(best["student_mean_f1"] - proj["mean_f1"], 4),
            "combined_minus_projected": round(best["combined_mean_f1"] - proj["mean_f1"], 4),
        },
    }

    # -- 3. speed
    if not args.no_speed:
        report["speed"] = {"sentences_per_language": args.speed_sentences,
                           "in_process": in_process_speed(student_dir, tagger_model, langs, args.speed_sentences),
                           "service": service_speed(student_dir, tagger_model, langs, args.speed_sentences)}
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    shutil.rmtree(work, ignore_errors=True)  # the dev inputs, and the student unless --output kept it elsewhere
    emit(args.name, report)
    log("")
    log(markdown(report, langs))


if __name__ == "__main__":
    main()
