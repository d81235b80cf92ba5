"""Where the benchmark scripts put their JSON: bench/results/ and $OUT."""
import json
import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(result, kind):
    """Writes `result` as <date>-<gpu>-<kind>.json into bench/results/ and,
    when set, $OUT (the folder the GPU machine sends back)."""
    device = result["device"]
    gpu = "h100" if "H100" in device else "h200" if "H200" in device else \
        device.split()[-1].lower()
    name = f"{result['date']}-{gpu}-{kind}.json"
    out_dirs = [RESULTS]
    if os.environ.get("OUT"):
        out_dirs.append(Path(os.environ["OUT"]))
    for d in out_dirs:
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {d / name}")
