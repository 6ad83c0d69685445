/* bitsandbytes checkpoints from a quantized-model artifact made by method
 * nf4 or int8: the directory transformers writes with `save_pretrained`
 * for a model loaded with a BitsAndBytesConfig, so that
 * `AutoModelForCausalLM.from_pretrained(dir)` loads it (docs/bitsandbytes.md
 * has the layout, the sources it follows and what stays dense).
 *
 * nf4 (bnb Linear4bit, QuantState.as_dict(packed=True)), for every
 * quantized X.weight [out, in], n = out·in, B = ceil(n/64), B2 = ceil(B/256):
 *   X.weight                               u8  [(n+1)/2, 1]  two codes a byte, even element high
 *   X.weight.absmax                        f32 [B]   (plain)  |  u8 [B] (double quant)
 *   X.weight.quant_map                     f32 [16]  the NF4 levels
 *   X.weight.nested_absmax                 f32 [B2]  (double quant)
 *   X.weight.nested_quant_map              f32 [256] bnb's signed dynamic map (double quant)
 *   X.weight.quant_state.bitsandbytes__nf4 u8  [len] json.dumps of {quant_type, blocksize,
 *                                          dtype, shape[, nested_blocksize, nested_dtype, nested_offset]}
 * int8 (bnb Linear8bitLt._save_to_state_dict):
 *   X.weight                               i8  [out, in]
 *   X.SCB                                  f32 [out]  the row absmax
 *   X.weight_format                        u8  []     0 ("row")
 * Dense tensors keep their stored dtype when every dense tensor has the
 * same 16-bit dtype (BF16 or F16), else all become F32 — so they are the
 * artifact's values exactly; config.json's torch_dtype (and the 4-bit
 * compute dtype and quant_state dtype) name that dtype. */
#ifndef QP_STAGES_PACKAGE_BNB_H
#define QP_STAGES_PACKAGE_BNB_H

#include "cache/cache.h"
#include "artifact/artifact.h"

/* Writes into dir (which must exist): model.safetensors, config.json (the
 * source's, torch_dtype set, "quantization_config" as BitsAndBytesConfig's
 * to_dict) and the source's other top-level files as qp_package_hf copies
 * them.  QP_EUSAGE (one line, prefixed with `what`) for an artifact not
 * made by method nf4 or int8. */
int qp_package_bnb(const char *dir, const qp_artifact *model, qp_cache *cache, const char *what);

/* Python's repr() of a double — the text json.dumps gives a float (shortest
 * round-trip digits, fixed notation for exponents -4..15, else 1e-05 form). */
void qp_bnb_py_float(char *out, size_t cap, double v);

#endif
