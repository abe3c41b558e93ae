"""Regenerate the shipped language-model instances in instances/llm/ (see instances/README.md).

    python scripts/make_llm_instances.py                      # every instance (seconds)
    python scripts/make_llm_instances.py llama31_8b_fp16_2k_home4  # just these
    python scripts/make_llm_instances.py --commands           # print the edgepart commands

Each instance is exactly one ``edgepart profile hf:NAME`` command (roofline times: nothing is
measured, so reruns give identical files); this script only runs them in turn. Every model is
built on the meta device from its shipped config to check the parameter counts; nothing is
downloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from make_instances import make_each, suite_parser  # noqa: E402  (this script's folder)

CLUSTERS = "instances/llm/clusters"

# name -> (shipped config, cluster, dtype, phase, prompt tokens, context tokens, sequences)
SUITE: dict[str, tuple[str, str, str, str, int, int, int]] = {
    "llama31_8b_fp16_2k_home4": ("llama-3.1-8b", "home4_lan", "fp16", "decode", 512, 2048, 4),
    "llama31_8b_int4_2k_home4": ("llama-3.1-8b", "home4_lan", "int4", "decode", 512, 2048, 4),
    "llama31_8b_int4_32k_home4": ("llama-3.1-8b", "home4_lan", "int4", "decode", 512, 32768,
                                  4),
    "llama31_8b_int8_32k_x6_home4": ("llama-3.1-8b", "home4_lan", "int8", "decode", 512,
                                     32768, 6),
    "qwen25_7b_fp16_32k_home4wifi": ("qwen2.5-7b", "home4_wifi", "fp16", "decode", 512, 32768,
                                     1),
    "llama32_3b_fp16_prefill2k_home4wifi": ("llama-3.2-3b", "home4_wifi", "fp16", "prefill",
                                            2048, 2048, 1),
    "llama32_1b_fp16_2k_home4": ("llama-3.2-1b", "home4_lan", "fp16", "decode", 512, 2048, 4),
    "phi3_mini_int8_4k_home4wifi": ("phi-3-mini", "home4_wifi", "int8", "decode", 512, 4096, 4),
}


def command(name: str) -> list[str]:
    """The ``edgepart`` arguments that make instance ``name``."""
    model, cluster, dtype, phase, prompt, context, batch = SUITE[name]
    return ["profile", f"hf:{model}", "--cluster", f"{CLUSTERS}/{cluster}.json",
            "--out", f"instances/llm/{name}.json", "--dtype", dtype, "--phase", phase,
            "--prompt-tokens", str(prompt), "--context-tokens", str(context),
            "--batch-size", str(batch)]


def run() -> int:
    return make_each(suite_parser(__doc__, SUITE), SUITE, command)


if __name__ == "__main__":
    raise SystemExit(run())
