// tools/sampler-emu: runs cuda/sampling.cu's sample_kernel (its source text, both dtypes) on the CPU, one pthread per
// CUDA thread of the 1024-thread block (common.cuh here emulates barriers, shuffles and shared atomics), and compares
// each row's token and log-prob with the host twin (sampling.cuh's host_sample_row) that SamplingDeviceMathTest holds
// against the CPU sampler. Built with -fsanitize=thread it is a race check of the kernel's shared-memory protocol
// (a missing __syncthreads shows up as a ThreadSanitizer report even when the token happens to be right).
//   emu SEED ROWS   (exit status 1 if any row differs)
#include "common.cuh"
#include <pthread.h>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>
thread_local Dim threadIdx;
Dim blockIdx;
std::barrier<>* g_block_barrier;
std::barrier<>* g_warp_barrier[32];
unsigned long long g_slot[32][32];
#include "kernel_body.inc"  // cuda/sampling.cu up to the end of its anonymous namespace

template <typename T>
struct Args { int tid; int* tok; float* lp; const T* logits; const int* ctr; int v; g4::smp::Spec sp; unsigned long long seed; };

template <typename T>
static void* run_thread(void* p) {
    Args<T>* a = (Args<T>*) p;
    threadIdx = Dim{(unsigned) a->tid, 0, 0};
    sample_kernel<T>(a->tok, a->lp, a->logits, a->ctr, a->v, a->sp, a->seed);
    return nullptr;
}

// One block (row) at a time: the kernel's __shared__ state is a static of the emulation.
template <typename T>
static void launch(int b, int v, const T* logits, const int* ctr, float t, int k, float p, unsigned long long seed, int* tok, float* lp) {
    using namespace g4::smp;
    Spec sp = make_spec(t, k, p, v);
    for (int row = 0; row < b; row++) {
        blockIdx = Dim{(unsigned) row, 0, 0};
        std::barrier<> bb(BLOCK);
        g_block_barrier = &bb;
        for (int w = 0; w < 32; w++) g_warp_barrier[w] = new std::barrier<>(32);
        std::vector<pthread_t> th(BLOCK);
        std::vector<Args<T>> args(BLOCK);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 1 << 18);
        for (int i = 0; i < BLOCK; i++) {
            args[i] = Args<T>{i, tok, lp, logits, ctr, v, sp, seed};
            if (pthread_create(&th[i], &attr, run_thread<T>, &args[i])) { perror("pthread_create"); exit(2); }
        }
        for (int i = 0; i < BLOCK; i++) pthread_join(th[i], nullptr);
        for (int w = 0; w < 32; w++) delete g_warp_barrier[w];
    }
}

int main(int argc, char** argv) {
    int seed0 = argc > 1 ? atoi(argv[1]) : 1, nrows = argc > 2 ? atoi(argv[2]) : 20;
    std::mt19937_64 rng(seed0);
    std::normal_distribution<double> N(0, 1);
    std::uniform_real_distribution<double> U(0, 1);
    struct S { float t; int k; float p; };
    const S specs[] = {{1, 0, 1}, {0.7f, 0, 1}, {0, 0, 1}, {1, 1, 1}, {1, 5, 1}, {1.3f, 50, 1}, {1, 0, 0.9f}, {0.6f, 0, 0.5f},
                       {1, 50, 0.9f}, {0.8f, 7, 0.3f}, {1, 0, 0.01f}, {1, 3000, 1}, {1, 3000, 0.95f}, {1, 0, 1e-30f}};
    const int vocabs[] = {1, 3, 100, 2047, 2049, 4096, 4097, 9000, 20000};
    int bad = 0;
    for (int it = 0; it < nrows; it++) {
        int v = vocabs[rng() % (sizeof vocabs / sizeof *vocabs)], kind = rng() % 6;
        bool bf16 = rng() % 4 == 0;
        std::vector<float> x(v);
        for (int j = 0; j < v; j++) {
            double g = N(rng);
            switch (kind) {
                case 0: x[j] = (float) g; break;
                case 1: x[j] = (float) (3 * g); break;
                case 2: x[j] = (float) rint(2 * g); break;                                        // big tie groups
                case 3: x[j] = (float) (-log(-log(U(rng))) * 2 + (j < 20 ? 8 : 0)); break;         // LLM-like
                case 4: x[j] = j % 7 == 0 ? -INFINITY : (j % 11 == 0 ? NAN : (float) g); break;  // non-finite entries
                default: x[j] = 1.0f + (float) (rng() % 5) * 1.1920929e-7f; break;               // ulp-close ties
            }
        }
        std::vector<__nv_bfloat16> xb(v);
        if (bf16)
            for (int j = 0; j < v; j++) { xb[j] = __float2bfloat16_rn(x[j]); x[j] = __bfloat162float(xb[j]); }
        S s = specs[rng() % (sizeof specs / sizeof *specs)];
        if (s.k > v) s.k = 0;
        int ctr[2] = {(int) (rng() % 100000), (int) (rng() % 1000)};
        unsigned long long seed = rng();
        int tok = -7;
        float lp = 0;
        if (bf16) launch(1, v, xb.data(), ctr, s.t, s.k, s.p, seed, &tok, &lp);
        else launch(1, v, x.data(), ctr, s.t, s.k, s.p, seed, &tok, &lp);
        int ttok;
        double tlp;
        g4::host_sample_row(x.data(), v, s.t, s.k, s.p, g4::philox_uniform(seed, ctr[0], ctr[1]), &ttok, &tlp, nullptr);
        bool ok = ttok == tok && (fabsf((float) tlp - lp) <= fmaxf(1e-6f, 1e-6f * fabsf(lp)) || (tlp != tlp && lp != lp));
        bad += !ok;
        printf("V=%d %s kind=%d T=%g k=%d p=%g: kernel %d %.9g, twin %d %.9g %s\n", v, bf16 ? "bf16" : "fp32", kind, s.t,
               s.k, s.p, tok, lp, ttok, tlp, ok ? "ok" : "MISMATCH");
        fflush(stdout);
    }
    printf("sampler-emu: %d of %d rows differ from the host twin\n", bad, nrows);
    return bad != 0;
}
