// The C ABI that bindings/org/grpo4j/bindings/CudaNative.java sees. Plain C declarations only (no CUDA headers), so
// the JNI glue compiles with g++ in seconds; the definitions live in native/runtime.cu and cuda/*.cu, compiled by
// nvcc into libgrpo4j_kernels.a (see native/Makefile).
//
// Every function returns a cudaError_t as int (0 = success); outputs go through pointers. Device addresses and streams
// travel as 64-bit integers. Java validates every argument (shapes, dtypes, alignment, sizes) before calling down;
// kernels that read index data (ids, positions, slots) also guard it on the device (flag, op: see cuda/common.cuh).
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

typedef long long g4_ptr;     // a device address
typedef long long g4_stream;  // a cudaStream_t

// dtype codes for the launchers that take several
#define G4_F32 0
#define G4_BF16 1

// ---- runtime (native/runtime.cu) -----------------------------------------------------------------------------------

int g4_runtime_version(int* v);
int g4_driver_version(int* v);
int g4_device_count(int* n);
const char* g4_error_string(int e);
const char* g4_error_name(int e);
int g4_set_device(int dev);
int g4_device_props(int dev, char* name, int name_len, long long* total_mem, int* sms, int* major, int* minor);
int g4_mem_get_info(long long* free_bytes, long long* total_bytes);
// Ends the process with status at once (stdio flushed, no atexit handlers: the CUDA runtime's teardown among them,
// which can wait for a kernel that never ends). For a benchmark JVM stopping after a hung kernel (bench.JvmHalt).
void g4_exit_now(int status);
int g4_dlopen_probe(const char* lib, char* err, int err_len);
// Reads and clears the runtime's last-error slot (0 when clean).
int g4_get_last_error(void);

int g4_malloc(long long bytes, g4_ptr* out);
int g4_free(g4_ptr ptr);
int g4_pool_init(int dev, int* supported);
int g4_malloc_async(long long bytes, g4_ptr* out, g4_stream s);
int g4_free_async(g4_ptr ptr, g4_stream s);
int g4_pool_trim(int dev, g4_stream s);
int g4_pool_usage(int dev, long long* reserved, long long* used);
int g4_memcpy_htod(g4_ptr dst, const void* src, long long bytes, g4_stream s);
int g4_memcpy_dtoh(void* dst, g4_ptr src, long long bytes, g4_stream s);
int g4_memcpy_dtod(g4_ptr dst, g4_ptr src, long long bytes, g4_stream s);
int g4_memset(g4_ptr ptr, int value, long long bytes, g4_stream s);
// Page-locked host memory (cudaHostAlloc), the staging of the stream-ordered copies below; put/get copy between it and
// Java arrays on the host (plain memcpy: the caller makes sure no copy in flight uses that range).
int g4_host_alloc(long long bytes, long long* out);
int g4_host_free(long long ptr);
void g4_host_put(long long dst, const void* src, long long bytes);
void g4_host_get(void* dst, long long src, long long bytes);
// A copy between page-locked host memory and the device, either way (cudaMemcpyDefault), ordered on the stream: the
// host does not wait (an event recorded after it says when it is done).
int g4_memcpy_async(long long dst, long long src, long long bytes, g4_stream s);
// 0 when the event's work is done, -1 while it is pending (no cudaError_t is negative), else the error.
int g4_event_query(long long ev);

int g4_stream_create(g4_stream* out);
int g4_stream_destroy(g4_stream s);
int g4_stream_synchronize(g4_stream s);
int g4_stream_wait_event(g4_stream s, long long ev);
int g4_event_create(long long* out);
// An event without timing (cheaper to record and query): for ordering and completion only.
int g4_event_create_untimed(long long* out);
int g4_event_destroy(long long ev);
int g4_event_record(long long ev, g4_stream s);
int g4_event_synchronize(long long ev);
int g4_event_elapsed_ms(float* ms, long long start, long long end);

// CUDA graphs: capture the work issued on a stream (relaxed mode), instantiate, replay.
int g4_graph_begin_capture(g4_stream s);
// Ends the capture; *graph_exec = the instantiated graph (0 when the capture failed: the error says why).
int g4_graph_end_capture(g4_stream s, long long* graph_exec);
int g4_graph_launch(long long graph_exec, g4_stream s);
int g4_graph_destroy(long long graph_exec);

// ---- cuda/fill.cu, cuda/cast.cu ----------------------------------------------------------------------------------------

int g4_fill(int dtype, g4_ptr x, long long n, float value, g4_stream s);
int g4_fill_i32(g4_ptr x, long long n, int value, g4_stream s);
int g4_scale(int dtype, g4_ptr x, long long n, float alpha, g4_stream s);
int g4_cast(int dst_dtype, g4_ptr dst, int src_dtype, g4_ptr src, long long n, g4_stream s);

// ---- cuda/elementwise.cu -----------------------------------------------------------------------------------------------

// out = a + b (all of dtype); out may alias a or b.
int g4_add(int dtype, g4_ptr out, g4_ptr a, g4_ptr b, long long n, g4_stream s);
// y (fp32) += alpha * x (x_dtype).
int g4_axpy(g4_ptr y, float alpha, int x_dtype, g4_ptr x, long long n, g4_stream s);

// ---- cuda/embedding.cu -------------------------------------------------------------------------------------------------

int g4_embedding(int dtype, g4_ptr out, g4_ptr table, g4_ptr ids, int n, int d, int v, g4_ptr flag, int op, g4_stream s);
// ids[i] = src[index[i]] for index[i] in [0, m); index[i] < 0 keeps ids[i]; index[i] >= m is reported (flag, op).
int g4_gather_tokens(g4_ptr ids, g4_ptr src, g4_ptr index, int n, int m, g4_ptr flag, int op, g4_stream s);
// Device scratch bytes g4_embedding_backward needs for n tokens over a vocabulary of v rows.
int g4_embedding_backward_workspace(int n, int v, long long* bytes);
// dTable (fp32) [v, d] += rows of dOut (dout_dtype) [n, d] grouped by id, each row's tokens summed in token order.
int g4_embedding_backward(g4_ptr dtable, int dout_dtype, g4_ptr dout, g4_ptr ids, int n, int d, int v,
                          g4_ptr ws, long long ws_bytes, g4_ptr flag, int op, g4_stream s);

// ---- cuda/rmsnorm.cu ---------------------------------------------------------------------------------------------------

// dtype: x, out, dx, dOut; w_dtype: the weight (fp32 or bf16, widened exactly)
int g4_rmsnorm(int dtype, int w_dtype, g4_ptr out, g4_ptr rstd, g4_ptr x, g4_ptr weight, int n, int d, float eps,
               g4_stream s);
int g4_rmsnorm_backward_workspace(int n, int d, long long* bytes);
int g4_rmsnorm_backward(int dtype, int w_dtype, g4_ptr dx, g4_ptr dweight, g4_ptr dout, g4_ptr x, g4_ptr weight,
                        g4_ptr rstd, int n, int d, g4_ptr ws, long long ws_bytes, g4_stream s);

// ---- cuda/rope.cu ------------------------------------------------------------------------------------------------------

// inv_freq: device fp32 [d/2], computed on the host by Rope.invFreq. inverse != 0 rotates by -angle (the backward).
int g4_rope(int dtype, g4_ptr out, g4_ptr x, g4_ptr positions, g4_ptr inv_freq, int n, int h, int d, int inverse,
            g4_ptr flag, int op, g4_stream s);

// ---- cuda/swiglu.cu ----------------------------------------------------------------------------------------------------

int g4_swiglu(int dtype, g4_ptr out, g4_ptr gate, g4_ptr up, long long n, g4_stream s);
int g4_swiglu_backward(int dtype, g4_ptr dgate, g4_ptr dup, g4_ptr dout, g4_ptr gate, g4_ptr up, long long n, g4_stream s);

// ---- cuda/adamw.cu, cuda/sumsq.cu --------------------------------------------------------------------------------------

// One step on a flat fp32 shard; bf16_out may be 0. The scalars are computed on the host (AdamWStep) exactly as
// CpuBackend computes them, so that the update is bit-identical to the CPU's. Each gradient is multiplied by
// grad_scale (clipping's coefficient, or 1) as it is read; g itself is not written.
int g4_adamw(g4_ptr p, g4_ptr g, g4_ptr m, g4_ptr v, g4_ptr bf16_out, long long n, float decay, float beta1,
             float beta2, float one_minus_beta1, float one_minus_beta2, float step_size, float bc2_sqrt, float eps,
             float grad_scale, g4_stream s);
int g4_sum_squares_workspace(long long n, long long* bytes);
// out[0] (fp32) += sum(x^2), deterministic (a fixed two-pass tree in float64).
int g4_sum_squares(g4_ptr out, int dtype, g4_ptr x, long long n, g4_ptr ws, long long ws_bytes, g4_stream s);

// ---- cuda/kvcache.cu ---------------------------------------------------------------------------------------------------

// Copies row t of k, v ([n, row] elements of dtype) to slot slots[t] of the caches ([capacity, row]).
int g4_kv_append(int dtype, g4_ptr kcache, g4_ptr vcache, g4_ptr k, g4_ptr v, g4_ptr slots, int n, int row,
                 int capacity, g4_ptr flag, int op, g4_stream s);

// ---- cuda/attention.cu, cuda/decode.cu (issue 12) -------------------------------------------------------------------

// Scratch bytes for g4_attention (backward = 0) or g4_attention_backward (deterministic as passed to it).
int g4_attention_workspace(int n, int b, int hq, int d, int backward, int deterministic, long long* bytes);
// Causal GQA attention over packed sequences: q, out [n, hq, d], k, v [n, hkv, d] (dtype), lse [n, hq] fp32, cu [b + 1].
// cu is checked on the device: a bad one is reported through flag (op | kind << 8, attention.cuh) and nothing is written.
// mode bit 1: the sm_90a wgmma forward kernel on a compute capability 9.0 device (elsewhere ignored); with it, bit 2:
// the forward with a producer warpgroup (fwd_tma_kernel: TMA, mbarriers; the same bits), bit 4: that one with the
// warpgroups' ping-pong (the same bits). cudaErrorNotSupported where the driver gives no tensor map encoder.
int g4_attention(int dtype, g4_ptr out, g4_ptr lse, g4_ptr q, g4_ptr k, g4_ptr v, g4_ptr cu, int n, int b, int hq,
                 int hkv, int d, float scale, int mode, g4_ptr ws, long long ws_bytes, g4_ptr flag, int op, g4_stream s);
// dq, dk, dv overwritten. deterministic bit 0 set: dQ by a separate pass (bitwise repeatable); clear: fp32 atomics.
// Bit 1 set: the 64-row kernels even where the wide ones fit; bit 2 set: the wide kernels at head dim 64 too (where
// the 64-row ones run by default; bit 1 wins over it). The same bits either way: for timing one kernel family
// against the other.
// g4_attention_workspace takes the same value.
int g4_attention_backward(int dtype, g4_ptr dq, g4_ptr dk, g4_ptr dv, g4_ptr dout, g4_ptr q, g4_ptr k, g4_ptr v,
                          g4_ptr out, g4_ptr lse, g4_ptr cu, int n, int b, int hq, int hkv, int d, float scale,
                          int deterministic, g4_ptr ws, long long ws_bytes, g4_ptr flag, int op, g4_stream s);
// Scratch bytes for g4_decode_attention with num_groups prefix group rows (0: none): the prefix marks and the split-KV
// and prefix partial states (0 when one split suffices and there are no groups).
int g4_decode_attention_workspace(int b, int hq, int hkv, int d, int max_blocks, int block_size, int sms, int num_groups,
                                  long long* bytes);
// out, q [b, hq, d]; caches [num_blocks, block_size, hkv, d]; tables [b, max_blocks]; ctx [b]; groups [num_groups, 3]
// (first, count, shared: sequences first .. first + count - 1 read their first `shared` keys through sequence first's
// table row) or 0. sms (the device's SM count) sets the split-KV plan. Bad ctx / table entries / group rows are
// reported through flag; the sequences concerned are not written.
int g4_decode_attention(int dtype, g4_ptr out, g4_ptr q, g4_ptr kcache, g4_ptr vcache, g4_ptr tables, g4_ptr ctx,
                        g4_ptr groups, int num_groups, int b, int hq, int hkv, int d, int num_blocks, int block_size,
                        int max_blocks, float scale, int sms, g4_ptr ws, long long ws_bytes, g4_ptr flag, int op,
                        g4_stream s);

// ---- host twins of the device math (native/hostmath.cu): the same __host__ __device__ functions, on host arrays ----

// bf16 round-to-nearest-even of every element, as the kernels do it.
void g4_host_bf16_round(const float* x, short* out, int n);
// The adamW kernel's per-element update on host arrays (bf16_out may be null).
void g4_host_adamw(float* p, const float* g, float* m, float* v, short* bf16_out, int n, float decay, float beta1,
                   float beta2, float one_minus_beta1, float one_minus_beta2, float step_size, float bc2_sqrt, float eps,
                   float grad_scale);
// The rope kernel's cos/sin table for one position and its rotation of one head vector x[d] -> out[d].
void g4_host_rope(const float* x, float* out, int position, const float* inv_freq, int d, int inverse);
// The swiglu kernels' per-element math.
void g4_host_swiglu(const float* gate, const float* up, float* out, int n);
void g4_host_swiglu_backward(const float* dout, const float* gate, const float* up, float* dgate, float* dup, int n);
// axpy and add as the kernels compute them (no fused multiply-add).
void g4_host_axpy(float* y, float alpha, const float* x, int n);

// Attention (issue 12): the kernels' tile algorithms on host arrays (fp32, no MMA; see native/hostmath.cu).
// cuSeqlens check: 1 when valid, else 0 and report4 = the device flag the kernel writes, less the op code in its
// first word: {kind << 8 (| table column << 12), index, value, limit} (attention.cuh AttentionError).
int g4_host_cu_seqlens_check(const int* cu, int b, int n, int* report4);
// The forward kernel's plan, tiles, masks and online softmax; P rounded to bf16 when round_p. 0 (nothing written) when
// cu is bad.
int g4_host_attention_tiled(const float* q, const float* k, const float* v, const int* cu, int b, int n, int hq, int hkv,
                            int d, float scale, int round_p, float* out, float* lse, int* report4);
// The dK/dV and dQ kernels' loops (D_i, query steps, masks); P and dS rounded to bf16 when round.
int g4_host_attention_backward_tiled(const float* q, const float* k, const float* v, const float* out, const float* dout,
                                     const float* lse, const int* cu, int b, int n, int hq, int hkv, int d, float scale,
                                     int round, float* dq, float* dk, float* dv, int* report4);
// {chunk, splits} of the decode kernel's split-KV plan.
void g4_host_decode_plan(int b, int hkv, int max_ctx, int block_size, int sms, int* chunk_splits);
// The decode kernel (warps, splits, merge, combine): the number of splits, or 0 when index data is bad (report4).
int g4_host_decode_tiled(const float* q, const float* kc, const float* vc, const int* tables, const int* ctx, int b,
                         int hq, int hkv, int d, int num_blocks, int bs, int max_blocks, float scale, int sms, int round_p,
                         float* out, int* report4);
// One row of scores s[n] and values v[n, d] through the online softmax in chunks, in `parts` merged parts.
void g4_host_online_softmax_row(const float* s, const float* v, int n, int d, float scale, int chunk, int parts,
                                float* out, float* lse);
// ---- cuda/sampling.cu, cuda/lmhead.cu (issue 13) ---------------------------------------------------------------------

// tokens [b] int32, logprobs [b] fp32 from logits [b, v] (dtype) and ctr [b, 2] int32 (stream, step); top_k 0 or >= v
// and top_p >= 1 mean no filter. v at most g4_sample_max_vocab (cudaErrorInvalidValue beyond).
int g4_sample(int dtype, g4_ptr tokens, g4_ptr logprobs, g4_ptr logits, g4_ptr ctr, int b, int v, float temperature,
              int top_k, float top_p, long long seed, g4_stream s);
int g4_sample_max_vocab(int* v);
// g4_sample with the top-p candidate list's capacity set (list_cap >= 0: that many tokens, at most what the device's
// shared memory holds, 0 for none; -1: what the device's shared memory holds) and its lowest bin moved by b0_bias: for tests of
// the kernel's other paths (an overflowing list, a boundary under the list). Same tokens either way.
int g4_sample_ex(int dtype, g4_ptr tokens, g4_ptr logprobs, g4_ptr logits, g4_ptr ctr, int b, int v, float temperature,
                 int top_k, float top_p, long long seed, int list_cap, int b0_bias, g4_stream s);
// g4_sample for the n rows listed in rows (device int32 [n], each in [0, b) of the full arrays tokens, logprobs, logits
// and ctr, none twice): one launch of n blocks, row rows[i] in block i, sampled as g4_sample samples it (Backend.sample
// with per-row specs: one call for each group of rows sharing a spec).
int g4_sample_rows(int dtype, g4_ptr tokens, g4_ptr logprobs, g4_ptr logits, g4_ptr ctr, g4_ptr rows, int n, int v,
                   float temperature, int top_k, float top_p, long long seed, g4_stream s);
// One vocabulary chunk of the fused LM head: z [rows, cols] fp32 (logits / T' of vocabulary columns v0..v0+cols) updates
// the rows' running max m (fp32), sum s (f64) and target logit zt (fp32); first initialises them and checks targets
// (flag, op); last writes lse (f64) and the log-probs (logp_d f64 and/or logp_f fp32; either may be 0).
int g4_lmhead_lse(g4_ptr z, int rows, int cols, int v0, int vocab, g4_ptr targets, int row0, g4_ptr m, g4_ptr s,
                  g4_ptr zt, int first, int last, g4_ptr lse, g4_ptr logp_d, g4_ptr logp_f, g4_ptr flag, int op,
                  g4_stream st);
// dz = g (1[v = target] - exp(z - lse)) for a chunk: in place into z (hi = lo = 0), as bf16 hi [rows, cols] and lo
// (dz - hi rounded), or as hi alone (lo = 0: dz rounded to bf16 once).
int g4_lmhead_dlogits(g4_ptr z, int rows, int cols, int v0, int vocab, g4_ptr targets, g4_ptr lse, g4_ptr g, g4_ptr hi,
                      g4_ptr lo, g4_stream st);
// The row path's forward over whole rows: z [rows, vocab] fp32 with row stride ld, walked in chunks of `chunk` columns
// (1..4096) in order, as g4_lmhead_lse over the same chunks would (bit for bit): lse (f64), log-probs (logp_d f64
// and/or logp_f fp32; either may be 0); targets outside [0, vocab) reported through flag (op, row0 + row).
int g4_lmhead_lse_rows(g4_ptr z, int rows, long long ld, int vocab, int chunk, g4_ptr targets, int row0, g4_ptr lse,
                       g4_ptr logp_d, g4_ptr logp_f, g4_ptr flag, int op, g4_stream st);
// The row path's dz, in place over whole rows: fp32 (bf16 = 0), or bf16 packed at the start of each row (bf16 = 1: a
// bf16 matrix [rows, vocab] with row stride 2 ld), each element g4_lmhead_dlogits's (its hi alone for bf16).
int g4_lmhead_dlogits_rows(g4_ptr z, int rows, long long ld, int vocab, int chunk, g4_ptr targets, g4_ptr lse, g4_ptr g,
                           int bf16, g4_stream st);
// The GRPO per-token math on f64 log-probs of n tokens: lp, ratio, clipped, kl_out [n] fp32, g [n] f64 (dloss/dlogp),
// term [n] f64 (each token's share of the loss; 0 for a target outside [0, vocab)). kl 0..3 = kl1..kl4.
int g4_grpo_terms(g4_ptr logp_d, g4_ptr old, g4_ptr ref, g4_ptr adv, g4_ptr w, g4_ptr targets, int vocab, int n,
                  float eps_low, float eps_high, float beta, int kl, g4_ptr lp, g4_ptr ratio, g4_ptr clipped,
                  g4_ptr kl_out, g4_ptr g, g4_ptr term, g4_stream st);
// loss [1] fp32 = the terms of the n tokens whose target is in [0, vocab), summed in a fixed order (one block).
int g4_grpo_sum(g4_ptr term, g4_ptr targets, int vocab, int n, g4_ptr loss, g4_stream st);
int g4_f32_to_f64(g4_ptr dst, g4_ptr src, long long n, g4_stream st);

// Host twins (native/hostmath.cu): Philox4x32-10 of n (counter [4], key [2]) pairs; the uniform of (seed, stream,
// step); exp_f32; one row of the sampler (returns the search passes; kept may be null); the lse kernel's order over
// chunks of `chunk` columns; dlogits (+ its bf16 split); the GRPO kernel (returns the loss).
void g4_host_philox(const int* ctr, const int* key, int* out, int n);
double g4_host_philox_uniform(long long seed, int stream, int step);
void g4_host_exp_f32(const float* x, float* out, int n);
int g4_host_sample_row(const float* row, int v, float temperature, int top_k, float top_p, double u, int* token,
                       double* logprob, int* kept);
int g4_host_sample_row_cap(const float* row, int v, float temperature, int top_k, float top_p, double u, int* token,
                           double* logprob, int* kept, int list_cap);
int g4_host_cand_count(const float* row, int v, float temperature, float top_p);
void g4_host_lmhead_lse(const float* z, int rows, int cols, int chunk, const int* targets, double* lse, double* logp);
void g4_host_lmhead_dlogits(const float* z, int rows, int cols, const int* targets, const double* lse, const double* g,
                            float* dz, short* hi, short* lo);
float g4_host_grpo_tokens(const double* logp, const float* old, const float* ref, const float* adv, const float* w,
                          const int* targets, int vocab, int n, float eps_low, float eps_high, float beta, int kl,
                          float* lp, float* ratio, float* clipped, float* kl_out, double* g);
// The attention kernels' fragment plumbing (mma.cuh address helpers, c_to_a, swizzle) on an emulated warp (ldmatrix,
// mma.m16n8k16 from the PTX tables) against plain products, head dims 64 and 128: bad4 = {wrong S = Q K^T elements,
// wrong P V elements, wrong fast-mode dS K elements, shared-memory bank conflicts}; returns their sum. mutation != 0
// plants one known layout error (1..5, hostmath.cu) so that a test can see the check fail.
int g4_host_mma_layout_check(int mutation, int* bad4);

#ifdef __cplusplus
}
#endif
