"""`make demo`: the whole pipeline end to end on embedded defaults, each stage through its real command line.

Synthetic PDFs -> a local Ray head + `ray job submit data_prep/render.py` -> the `deepspeed` launcher on 2 CPU
processes (ZeRO-3, gradient cache) -> budget-grid evaluation -> budget variants registered in a local SQLite
MLflow registry -> gated alias promotion -> the eval pages indexed in Qdrant Edge at an alias (every budget of
serve.budgets), a cascade search and the exact search it approximates, and the HTTP server's /search.
Every command is printed before it runs; every service started here is stopped by its PID.

    python -m demo [--config configs/tiny.yaml] [key=value ...]
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipeline.cli import Command, RunConfig, parse_cli
from pipeline.configlib import save_config
from pipeline.layout.run import StagePaths, read_card

PY = sys.executable
BIN = Path(PY).parent
CLI = Command("python -m demo", "The whole pipeline end to end on a tiny model and synthetic documents.",
              sections=("synth", "train", "tracking"))


def sh(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """Print `cmd` the way a user would type it, run it with output streaming through."""
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    res = subprocess.run(cmd)
    if check and res.returncode != 0:
        raise SystemExit(f"demo: step failed with exit code {res.returncode}: {shlex.join(cmd[:6])} ...")
    return res


def banner(text: str) -> None:
    print(f"\n{'=' * 78}\n== {text}\n{'=' * 78}", flush=True)


def render_on_ray(cfg: RunConfig, conf: list[str]) -> None:
    from data_prep.ray_head import RayHead, submit_render_job

    with RayHead(num_cpus=2) as address:
        print(f"Ray head at {address} (dashboard and job API on 127.0.0.1 only)")
        print(f"\n$ ray job submit --address {address} --working-dir . -- python data_prep/render.py "
              f"--input {cfg.render.input} --output {cfg.render.output} {' '.join(conf)}", flush=True)
        res = submit_render_job(address, cfg.render.input, cfg.render.output, conf)
        print("\n".join(line for line in res.stdout.splitlines() if "render" in line or "succeeded" in line))


def serve_http(cfg: RunConfig, conf: list[str], alias: str, query: str) -> None:
    """Start the HTTP server for the alias, ask it for one query's results and its vectors, stop it by PID."""
    from pipeline.procs import free_port, stop_process_group

    port = free_port()
    cmd = [PY, "-m", "pipeline.serve", "http", *conf, "--alias", alias, "--port", str(port)]
    print(f"\n$ {shlex.join(cmd)} &", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit("demo: the model server did not come up")
                time.sleep(1)
        for path, body in (("search", {"queries": [query], "k": 3}),
                           ("invocations", {"dataframe_split": {"columns": ["query"], "data": [[query]]}})):
            data = json.dumps(body).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/{path}", data, {"Content-Type": "application/json"})
            print(f"$ curl -s http://127.0.0.1:{port}/{path} -H 'Content-Type: application/json' -d '{data.decode()}'")
            with urllib.request.urlopen(req, timeout=60) as r:
                answer = json.loads(r.read())
            print(f"-> {json.dumps(answer)[:400]} ...")
    finally:
        stop_process_group(proc)  # the server's own session: uvicorn workers go with it
        print(f"model server (pid {proc.pid}) stopped")


def learned(cfg: RunConfig) -> None:
    """One line: the full budget's nDCG@5 on the held-out pages against a random ranking's."""
    from pipeline.evaluate.metrics import chance_ndcg_at_5

    res = json.loads(StagePaths.from_config(cfg).results.read_text())
    full, chance = res["rows"][0], chance_ndcg_at_5(res["pages"])
    print(f"\nlearned: full budget ({full['budget']}) nDCG@5 {full['ndcg_at_5']:.3f} on {res['pages']} held-out pages "
          f"= {full['ndcg_at_5'] / chance:.1f}x chance ({chance:.3f} for a random ranking)", flush=True)
    spec = cfg.export.budgets.get("balanced")
    if spec:  # the balanced budget at each page-vector precision evaluated
        from pipeline.export.variants import resolve_budget

        b = resolve_budget(spec, sorted({r["layers"] for r in res["rows"]}), max(r["dim"] for r in res["rows"]))
        same = [r for r in res["rows"] if (r["layers"], r["dim"], r["pool"]) == (b.layers, b.dim, b.pool)]
        print("balanced budget by precision: " + ", ".join(
            f"{r['precision']} nDCG@5 {r['ndcg_at_5']:.3f} at {r['bytes_per_page']:.0f} bytes/page" for r in same))


def summary(cfg: RunConfig, conf: list[str], out: Path) -> None:
    banner("summary")
    sh([PY, "-m", "pipeline.promote", *conf, "--list"])
    paths = StagePaths.from_config(cfg)
    run = paths.run.read_run_json()
    print(f"\nevery budget:  {paths.eval_dir / 'results.md'}")
    print(f"Pareto plot:   {paths.eval_dir / 'pareto.png'}")
    print(f"variants:      {paths.variants}")
    print(f"MLflow run:    {run['mlflow_run_id']} in {cfg.tracking.tracking_uri}")
    print(f"MLflow UI:     {BIN / 'mlflow'} ui --backend-store-uri {cfg.tracking.tracking_uri} --host 127.0.0.1")
    print(f"everything:    {out}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv = ["--config", "configs/tiny.yaml", *argv]
    cfg = parse_cli(CLI, argv)
    out = Path(cfg.train.output_dir).resolve().parent  # absolute: Ray jobs run in a copy of the working dir
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "demo_config.yaml")
    conf = ["--config", str(out / "demo_config.yaml")]
    t0 = time.time()

    banner("1/7 synthetic documents")
    sh([PY, "data_prep/synth.py", *conf])
    sh([PY, "-m", "demo.tiny", *conf])
    banner("2/7 render job on a local Ray cluster")
    render_on_ray(cfg, conf)
    banner("3/7 training: deepspeed launcher, 2 CPU processes, ZeRO-3, gradient cache")
    sh([str(BIN / "deepspeed"), "--num_gpus", "2", "--no_local_rank", "--module", "pipeline.train", *conf])
    banner("4/7 evaluation over the budget grid")
    sh([PY, "-m", "pipeline.evaluate", *conf])
    learned(cfg)
    banner("5/7 export the budget variants and register them in MLflow")
    sh([PY, "-m", "pipeline.export", *conf])
    banner("6/7 promotion through the quality gate")
    variants = StagePaths.from_config(cfg).variants
    cards = {name: read_card(variants / name) for name in cfg.export.budgets}
    for alias, card in cards.items():  # each alias to its own variant: the first holder passes the gate
        sh([PY, "-m", "pipeline.promote", *conf, "--alias", alias, "--version", str(card["registered"]["version"])],
           check=False)
    smallest = min(cards.values(), key=lambda c: c["bytes_per_page"])
    sh([PY, "-m", "pipeline.promote", *conf, "--alias", "full", "--version", str(smallest["registered"]["version"]),
        "--dry-run"],
       check=False)  # would the smallest variant take `full`? the gate compares nDCG@5 on the same eval set
    banner("7/7 serving: the eval pages in Qdrant Edge, a cascade search, and the HTTP server")
    from data_prep.synth import EVAL_DIR

    lines = Path(cfg.synth.out_dir, "queries.jsonl").read_text().splitlines()
    held_out = (q for q in map(json.loads, lines) if q["doc"].startswith(f"{EVAL_DIR}/") or not cfg.synth.eval_docs)
    query = next(held_out)["query"]
    alias = cfg.serve.alias  # tiny.yaml: `full`, whose variant reaches every budget of serve.budgets
    sh([PY, "-m", "pipeline.serve", "index", *conf, "--alias", alias])
    cascade = " > ".join(f"{b}:{n}" for b, n in cfg.serve.cascade) or "the variant's own budget"
    print(f"\ncascade ({cascade}; the last stage keeps k):")
    sh([PY, "-m", "pipeline.serve", "search", *conf, "--alias", alias, "--query", query, "-k", "3"])
    print("\nthe exact search it approximates (every page scored at the full budget):")
    sh([PY, "-m", "pipeline.serve", "search", *conf, "--alias", alias, "--query", query, "-k", "3",
        "serve.cascade=[[full, 3]]"])
    serve_http(cfg, conf, alias, query)
    summary(cfg, conf, out)
    print(f"\ndemo finished in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
