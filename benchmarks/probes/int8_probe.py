"""`python -m benchmarks.probes.int8_probe`: does int8 make the MiniLM encoder faster on this CPU at min cosine >= 0.99?

    python -m benchmarks.probes.int8_probe [--only micro,e2e,tflite] [--rows 1000] [--rounds 3] [--e2e-rounds 2]

Three parts, each timing its variants interleaved round by round with
TensorFlow's own CPU kernels: one dense layer at the encoder's shapes
(`micro`), the whole encoder with its dense layers swapped (`e2e`), and the
encoder converted to TFLite (`tflite`). The report goes to
`benchmarks/results/int8_probe.json` (`--json`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
THREADS = int(os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2"))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402, F401 (registers the tokenizer's ops)

from benchmarks import corpus, harness  # noqa: E402
from benchmarks.probes import int8_tables  # noqa: E402
from pipelines.models.minilm import load_minilm  # noqa: E402

BENCHMARK = "int8_probe"
ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "benchmarks" / "data" / "docstrings.jsonl"
DENSE_NAMES = ("query", "key", "value", "attention_output", "intermediate", "output")
M_TOKENS = int8_tables.M_TOKENS
SHAPES = ((384, 384), (384, 1536), (1536, 384))


def summary(times: list[float]) -> dict:
    """Median, fastest and slowest of a variant's times."""
    return {"median_s": harness.median(times), "min_s": min(times), "max_s": max(times)}


def interleaved(fns: dict, rounds: int, reps: dict | None = None) -> dict:
    """Times each fn `rounds` times, round-robin, after one warm-up call each.

    Returns ({name: timing summary}, {name: warm-up output}).
    """
    outputs = {name: np.asarray(fn()) for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            n = (reps or {}).get(name, 1)
            start = time.perf_counter()
            for _ in range(n):
                out = fn()
            np.asarray(out)
            times[name].append((time.perf_counter() - start) / n)
    return {name: summary(t) for name, t in times.items()}, outputs


# --------------------------------------------------------------------------- dense layers


def quantize_weights(kernel: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights: (int8 [in, out], float32 scale [out])."""
    peak = np.abs(kernel).max(0) if per_channel else np.full(kernel.shape[1], np.abs(kernel).max())
    scale = np.maximum(peak, 1e-12) / 127.0
    return np.clip(np.round(kernel / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


class Int8Dense(tf.Module):
    """Dynamic-range int8 dense: y = dequant(quint8(x) @ qint8(W)) + bias.

    Activations are quantized per call, asymmetric (min..max -> 0..255), over
    the whole tensor or per row (token); weights are symmetric int8, per
    tensor or per output channel. The matmul is oneDNN's
    `QuantizedMatMulWithBiasAndDequantize` in SCALED mode on [0, 1] x
    [-127, 127] ranges; the real scales, the zero point (lo * column sums of
    W) and the bias are applied in float afterwards (docs/benchmarks.md says
    why not QuantizeV2's own ranges or MIN_FIRST mode).
    """

    def __init__(self, kernel: np.ndarray, bias: np.ndarray, per_row: bool, per_channel: bool):
        super().__init__()
        w8, scale = quantize_weights(kernel, per_channel)
        # int8, not qint8: quantized dtypes cannot cross the embed's while loop.
        self.w8 = tf.constant(w8)
        self.scale = tf.constant(scale)
        self.colsum = tf.constant((w8.astype(np.float32) * scale).sum(0))
        self.bias = tf.constant(bias.astype(np.float32))
        self.zero_bias = tf.zeros_like(self.bias)
        self.axis = 1 if per_row else None

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        lo = tf.reduce_min(x, self.axis, keepdims=True)
        span = tf.maximum(tf.reduce_max(x, self.axis, keepdims=True) - lo, 1e-8)
        q = tf.quantization.quantize((x - lo) / span, 0.0, 1.0, tf.quint8, mode="SCALED")
        y = tf.raw_ops.QuantizedMatMulWithBiasAndDequantize(
            a=q.output,
            b=tf.bitcast(self.w8, tf.qint8),
            bias=self.zero_bias,
            min_a=q.output_min,
            max_a=q.output_max,
            min_b=-127.0,
            max_b=127.0,
            min_freezed_output=-1.0,
            max_freezed_output=1.0,
            Toutput=tf.float32,
            input_quant_mode="SCALED",
        )
        return y * (span * self.scale) + (lo * self.colsum + self.bias)


class Bf16Dense(tf.Module):
    """What the bf16 SavedModel rewrite does to a Dense: cast in, bf16 matmul + bias, cast out."""

    def __init__(self, kernel: np.ndarray, bias: np.ndarray):
        super().__init__()
        self.kernel = tf.constant(kernel, tf.bfloat16)
        self.bias = tf.constant(bias, tf.bfloat16)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        y = tf.nn.bias_add(tf.matmul(tf.cast(x, tf.bfloat16), self.kernel), self.bias)
        return tf.cast(y, tf.float32)


class Float32Dense(tf.Module):
    def __init__(self, kernel: np.ndarray, bias: np.ndarray):
        super().__init__()
        self.kernel, self.bias = tf.constant(kernel), tf.constant(bias)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.bias_add(tf.matmul(x, self.kernel), self.bias)


DENSE_VARIANTS = {
    "float32": Float32Dense,
    "bf16 (cast in/out)": Bf16Dense,
    "int8 dyn, per-tensor act+W": lambda k, b: Int8Dense(k, b, per_row=False, per_channel=False),
    "int8 dyn, per-tensor act, per-chan W": lambda k, b: Int8Dense(k, b, per_row=False, per_channel=True),
    "int8 dyn, per-row act, per-chan W": lambda k, b: Int8Dense(k, b, per_row=True, per_channel=True),
}


# Per-tensor int8 weights fail the cosine bar already with per-tensor activations; not timed end to end.
E2E_VARIANTS = [name for name in DENSE_VARIANTS if name != "int8 dyn, per-tensor act+W"]


# --------------------------------------------------------------------------- 1. micro


def micro(rounds: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for k, n in SHAPES:
        # LayerNorm-like activations with a few outlier features, BERT-like weights.
        x_np = rng.standard_normal((M_TOKENS, k)).astype(np.float32)
        x_np[:, rng.choice(k, 4, replace=False)] *= 8.0
        w_np = (rng.standard_normal((k, n)) * 0.04).astype(np.float32)
        b_np = (rng.standard_normal(n) * 0.1).astype(np.float32)
        x, w, b = tf.constant(x_np), tf.constant(w_np), tf.constant(b_np)
        ref = x_np.astype(np.float64) @ w_np + b_np
        fns = {}
        for name, make in DENSE_VARIANTS.items():
            fns[name] = tf.function(lambda layer=make(w_np, b_np): layer(x))  # noqa: B008 (binds this variant's layer)
        # Pre-quantized ("static") activations: the int8 kernel + float epilogue alone.
        layer = Int8Dense(w_np, b_np, per_row=False, per_channel=True)
        lo, hi = float(x_np.min()), float(x_np.max())
        xq = tf.quantization.quantize((x - lo) / (hi - lo), 0.0, 1.0, tf.quint8, mode="SCALED")
        wmax = float(np.abs(w_np).max())
        xq_mf = tf.quantization.quantize(x, lo, hi, tf.quint8, mode="MIN_FIRST")
        wq_mf = tf.quantization.quantize(w, -wmax, wmax, tf.quint8, mode="MIN_FIRST")

        def static_onednn():
            y = tf.raw_ops.QuantizedMatMulWithBiasAndDequantize(
                a=xq.output,
                b=tf.bitcast(layer.w8, tf.qint8),
                bias=layer.zero_bias,
                min_a=0.0,
                max_a=1.0,
                min_b=-127.0,
                max_b=127.0,
                min_freezed_output=-1.0,
                max_freezed_output=1.0,
                Toutput=tf.float32,
                input_quant_mode="SCALED",
            )
            return y * ((hi - lo) * layer.scale) + (lo * layer.colsum + layer.bias)

        def legacy_u8u8():
            return tf.raw_ops.QuantizedMatMul(
                a=xq_mf.output,
                b=wq_mf.output,
                min_a=xq_mf.output_min,
                max_a=xq_mf.output_max,
                min_b=wq_mf.output_min,
                max_b=wq_mf.output_max,
                Toutput=tf.qint32,
            )[0]

        def quantize_only():
            lo_, hi_ = tf.reduce_min(x), tf.reduce_max(x)
            return tf.quantization.quantize((x - lo_) / (hi_ - lo_), 0.0, 1.0, tf.quint8, mode="SCALED").output

        fns["QMMWithBiasAndDeq u8xs8, act pre-quantized"] = tf.function(static_onednn)
        fns["QuantizedMatMul u8xu8->i32 (static)"] = tf.function(legacy_u8u8)
        fns["  act min/max + QuantizeV2 alone"] = tf.function(quantize_only)
        reps = dict.fromkeys(fns, 3)
        if (k, n) == SHAPES[0]:
            try:
                w_uq = tf.raw_ops.UniformQuantize(
                    input=w,
                    scales=tf.constant(wmax / 127),
                    zero_points=tf.constant(0),
                    Tout=tf.qint8,
                    quantization_min_val=-127,
                    quantization_max_val=127,
                )
                fns["UniformQuantizedDotHybrid f32xs8"] = tf.function(
                    lambda: (
                        tf.raw_ops.UniformQuantizedDotHybrid(
                            lhs=x,
                            rhs=w_uq,
                            rhs_scales=tf.constant(wmax / 127),
                            rhs_zero_points=tf.constant(0),
                            Tout=tf.float32,
                            rhs_quantization_min_val=-127,
                            rhs_quantization_max_val=127,
                        )
                        + b
                    )
                )
                reps["UniformQuantizedDotHybrid f32xs8"] = 1
            except Exception as error:  # noqa: BLE001 - a probe reports what is missing
                print(f"UniformQuantizedDotHybrid unavailable: {str(error)[:120]}")
        timing, outs = interleaved(fns, rounds, reps)
        flops = 2 * M_TOKENS * k * n
        for name in fns:
            out = outs[name]
            cos = None
            if out.dtype == np.float32 and out.shape == ref.shape:
                cos = float(harness.cosines(out, ref).min())
            t = timing[name]
            rows.append(
                {
                    "shape": f"{M_TOKENS}x{k}x{n}",
                    "variant": name,
                    **t,
                    "gflops": flops / t["median_s"] / 1e9,
                    "gflops_range": [flops / t["max_s"] / 1e9, flops / t["min_s"] / 1e9],
                    "min_cos_rows": cos,
                }
            )
    return rows


# --------------------------------------------------------------------------- 2. end to end


def swap_dense(model, factory) -> None:
    """Replaces every encoder Dense by factory(kernel, bias) (originals kept in `_f32_dense`)."""
    for block in model.encoder.blocks:
        originals = block.__dict__.setdefault("_f32_dense", {})
        for name in DENSE_NAMES:
            dense = originals.setdefault(name, getattr(block, name))
            setattr(block, name, factory(dense.kernel.numpy(), dense.bias.numpy()))


def e2e(model, texts: list[str], rounds: int) -> tuple[list[dict], np.ndarray]:
    """Rows and the float32 embeddings."""
    batch = tf.constant(texts)
    embed = type(model).embed.python_function
    fns = {}
    for name in E2E_VARIANTS:
        swap_dense(model, DENSE_VARIANTS[name])
        fn = tf.function(lambda t, embed=embed: embed(model, t), input_signature=[tf.TensorSpec([None], tf.string)])
        fn(batch[:8])  # traces now, while this variant's layers are in place: one trace per variant
        fns[name] = fn
    timing, outs = interleaved({name: (lambda fn=fn: fn(batch)) for name, fn in fns.items()}, rounds)
    rows = []
    for name, t in timing.items():
        cos = harness.cosines(outs[name], outs["float32"])
        rows.append(
            {
                "variant": name,
                **t,
                "rows_per_s": len(texts) / t["median_s"],
                "rows_per_s_range": [len(texts) / t["max_s"], len(texts) / t["min_s"]],
                "min_cos": float(cos.min()),
                "mean_cos": float(cos.mean()),
            }
        )
    return rows, outs["float32"]


# --------------------------------------------------------------------------- 3. TFLite


def pooled_encoder(model):
    """Encoder + mean pooling + L2 norm from the model's variables, in ops TFLite converts."""
    enc, cfg = model.encoder, model.encoder.config
    heads, size = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads

    def norm(ln, x):
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + ln.eps) * ln.gamma + ln.beta

    def dense(d, x):
        return tf.nn.bias_add(tf.matmul(x, d.kernel), d.bias)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)] * 2)
    def fn(token_ids, mask):
        batch, length = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
        x = tf.gather(enc.word_embeddings, token_ids) + tf.gather(enc.position_embeddings, tf.range(length))
        x = tf.reshape(x + enc.token_type_embeddings[0], [-1, cfg.hidden_size])
        x = norm(enc.embedding_norm, x)
        bias = tf.reshape((1.0 - tf.cast(mask, tf.float32)) * -1e9, [batch, 1, 1, length])
        for blk in enc.blocks:
            split = lambda t: tf.transpose(tf.reshape(t, [batch, length, heads, size]), [0, 2, 1, 3])  # noqa: E731
            q, k, v = split(dense(blk.query, x)), split(dense(blk.key, x)), split(dense(blk.value, x))
            probs = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / np.sqrt(size) + bias, axis=-1)
            ctx = tf.reshape(tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]), [-1, cfg.hidden_size])
            x = norm(blk.attention_norm, x + dense(blk.attention_output, ctx))
            h = tf.nn.gelu(dense(blk.intermediate, x), approximate=False)
            x = norm(blk.output_norm, x + dense(blk.output, h))
        weights = tf.expand_dims(tf.cast(mask, tf.float32), -1)
        tokens = tf.reshape(x, [batch, length, cfg.hidden_size])
        mean = tf.reduce_sum(tokens * weights, 1) / tf.maximum(tf.reduce_sum(weights, 1), 1e-9)
        return tf.math.l2_normalize(mean, axis=1, epsilon=1e-24)

    return fn


def tflite(model, texts: list[str], reference: np.ndarray, rounds: int) -> list[dict]:
    ids = model.tokenizer.tokenize(tf.constant(texts))
    rows_ids = [r.numpy() for r in ids]
    order = np.argsort([len(r) for r in rows_ids], kind="stable")
    chunks = []
    for start in range(0, len(order), 32):
        idx = order[start : start + 32]
        length = max(len(rows_ids[i]) for i in idx)
        tok, mask = np.zeros((len(idx), length), np.int32), np.zeros((len(idx), length), np.int32)
        for j, i in enumerate(idx):
            tok[j, : len(rows_ids[i])], mask[j, : len(rows_ids[i])] = rows_ids[i], 1
        chunks.append((idx, tok, mask))
    fn = pooled_encoder(model)
    concrete = fn.get_concrete_function()

    def run_tf():
        result = np.zeros_like(reference)
        for idx, tok, mask in chunks:
            result[idx] = fn(tok, mask).numpy()
        return result

    name = "TF float32, same chunks, no tokenizer"
    out, runners = [{"variant": name, "size_mb": None}], {name: run_tf}
    for name, quantize in (("TFLite float32", False), ("TFLite dynamic-range int8", True)):
        try:
            converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model.encoder)
            if quantize:
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            start = time.perf_counter()
            blob = converter.convert()
            convert_s = time.perf_counter() - start
        except Exception as error:  # noqa: BLE001 - a probe reports what is missing
            out.append({"variant": name, "error": str(error)[:300]})
            continue
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        interpreter = tf.lite.Interpreter(model_content=blob, num_threads=THREADS)
        inputs = interpreter.get_input_details()
        output = interpreter.get_output_details()[0]["index"]

        def run(interpreter=interpreter, inputs=inputs, output=output):
            result = np.zeros_like(reference)
            for idx, tok, mask in chunks:
                for detail in inputs:
                    interpreter.resize_tensor_input(detail["index"], tok.shape)
                interpreter.allocate_tensors()
                for detail in inputs:
                    interpreter.set_tensor(detail["index"], mask if "mask" in detail["name"] else tok)
                interpreter.invoke()
                result[idx] = interpreter.get_tensor(output)
            return result

        runners[name] = run
        out.append({"variant": name, "size_mb": len(blob) / 1e6, "convert_s": convert_s})
    timing, outs = interleaved(runners, rounds)
    for row in out:
        if row["variant"] in runners:
            t = timing[row["variant"]]
            cos = harness.cosines(outs[row["variant"]], reference)
            row.update(
                t,
                rows_per_s=len(texts) / t["median_s"],
                rows_per_s_range=[len(texts) / t["max_s"], len(texts) / t["min_s"]],
                min_cos=float(cos.min()),
                mean_cos=float(cos.mean()),
            )
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.probes.int8_probe", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--json", default=harness.result_path(BENCHMARK), help="write the report here (default: %(default)s)"
    )
    parser.add_argument("--only", default="micro,e2e,tflite", help="comma-separated parts to run")
    parser.add_argument("--rows", type=int, default=1000, help="docstrings for e2e/tflite")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds, micro")
    parser.add_argument("--e2e-rounds", type=int, default=2, help="interleaved timing rounds, e2e/tflite")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    meta = {
        **harness.machine(),
        "rows": args.rows,
        "threads": THREADS,
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default(on)"),
        "command": harness.command_line("benchmarks.probes.int8_probe", argv),
    }
    print(
        f"{harness.cpu_line(meta)}; TF {tf.__version__}, {THREADS} intra-op threads, oneDNN opts {meta['onednn_opts']}"
    )
    results: dict = {}
    started = time.perf_counter()
    if "micro" in parts:
        results["micro"] = micro(args.rounds)
    if parts & {"e2e", "tflite"}:
        model, texts = load_minilm(), corpus.read_texts(str(CORPUS), args.rows)
        if "e2e" in parts:
            results["e2e"], reference = e2e(model, texts, args.e2e_rounds)
        if "tflite" in parts:
            swap_dense(model, Float32Dense)
            if "e2e" not in parts:
                reference = model.embed(tf.constant(texts)).numpy()
            results["tflite"] = tflite(model, texts, reference, args.e2e_rounds)
    harness.finish(meta)
    print("\n".join(int8_tables.text_lines(results, THREADS, args.rows)))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    harness.write_result(BENCHMARK, {**results, "meta": meta}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
