"""LTX-Video GPU benchmark: the full-size LTX-Video 2B architecture (random weights: the
same compute as trained ones) in bf16, one 768x512, 121-frame shot, VAE decode included,
at distilled settings (8 steps, no classifier-free guidance) and dev settings (40 steps,
guidance 3), beside the stock diffusers ``LTXPipeline`` on the same inputs, in one run.

Ours is the same pipeline with what aiprod-post's ltx engine adds: the transformer's
repeated block compiled (regional ``torch.compile``, default mode, static shapes), text
embeddings computed once per shot and reused, and TF32/cuDNN autotuning on. One warm shape:
``bench_ltx_film.py`` measures a whole film, compile included. Output is compared with the stock pipeline's (same seed).
Prints one JSON line with the GPU's name. Needs torch, diffusers and transformers.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import time

import torch


def build(device="cuda", dtype=torch.bfloat16):
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    torch.manual_seed(0)
    with torch.device(device):
        transformer = LTXVideoTransformer3DModel().to(dtype)  # the 2B configuration
        vae = AutoencoderKLLTXVideo().to(dtype)
        t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64,
                                     num_layers=24, num_heads=64, feed_forward_proj="gated-gelu",
                                     is_encoder_decoder=False)).to(dtype)
    words = "a b c d e f g h i j k l m n o p q r s t u v w x y z".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    return dict(transformer=transformer, vae=vae, text_encoder=t5, tokenizer=tokenizer,
                scheduler=FlowMatchEulerDiscreteScheduler())


def timed(fn, repeats=2):
    torch.cuda.synchronize()
    best = float("inf")
    out = None
    for _ in range(repeats):
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, torch.cuda.max_memory_allocated() / 2**30, out


def main() -> None:
    from diffusers import LTXPipeline

    # a cold compile each run, as the figure says (bench_ltx_film.py measures the warm one)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp())

    parts = build()
    stock = LTXPipeline(**parts)
    stock.set_progress_bar_config(disable=True)
    prompt = "a b c d e f g h i j k l m n o p q r s t u v w x y z"
    common = dict(width=768, height=512, num_frames=121, output_type="pt", decode_timestep=0.05,
                  decode_noise_scale=0.025, max_sequence_length=128)
    settings = {"distilled": dict(num_inference_steps=8, guidance_scale=1.0),
                "dev": dict(num_inference_steps=40, guidance_scale=3.0)}
    result = {"benchmark": "ltx-gpu", "gpu": torch.cuda.get_device_name(0),
              "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "shot": "768x512x121", "dtype": "bfloat16"}
    import diffusers
    result["diffusers"] = diffusers.__version__

    def run_stock(s):
        g = torch.Generator("cuda").manual_seed(0)
        return stock(prompt=prompt, negative_prompt="", generator=g, **common, **s).frames

    for name, s in settings.items():
        run_stock(s)  # warm-up
        t, mem, ref = timed(lambda: run_stock(s))
        result[f"stock_{name}"] = {"seconds": round(t, 3), "peak_gib": round(mem, 2)}
        result[f"_ref_{name}"] = ref

    # ours: compiled transformer, cached prompt embeddings, TF32 + cuDNN benchmark
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    ours = LTXPipeline(**parts)
    ours.set_progress_bar_config(disable=True)
    ours.transformer.compile_repeated_blocks(dynamic=False, fullgraph=True)
    for name, s in settings.items():
        cfg = s["guidance_scale"] > 1.0
        pe, pm, ne, nm = ours.encode_prompt(prompt=prompt, negative_prompt="",
                                            do_classifier_free_guidance=cfg,
                                            max_sequence_length=128, device="cuda")

        def run_ours():
            g = torch.Generator("cuda").manual_seed(0)
            return ours(prompt_embeds=pe, prompt_attention_mask=pm,
                        negative_prompt_embeds=ne if cfg else None,
                        negative_prompt_attention_mask=nm if cfg else None,
                        generator=g, **common, **s).frames

        run_ours()  # compile and warm up
        t, mem, out = timed(run_ours)
        ref = result.pop(f"_ref_{name}")
        diff = (out.float() - ref.float()).abs()
        mse = float((diff ** 2).mean())
        result[f"ours_{name}"] = {
            "seconds": round(t, 3), "peak_gib": round(mem, 2),
            "speedup": round(result[f"stock_{name}"]["seconds"] / t, 3),
            "max_abs_diff_vs_stock": round(float(diff.max()), 4),
            "psnr_vs_stock_db": round(10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item(), 2),
        }
    result["targets_h200_seconds"] = {"distilled": 0.9, "dev": 5.0}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
