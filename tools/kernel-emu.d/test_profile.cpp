// tools/kernel-emu --profile checks itself: kernels with a known memory behaviour (prof_kernels.cu) must be counted
// as the hardware's rules say (32-byte sectors; 32 banks of 4 bytes, a word shared by lanes broadcast). Registered only
// in the profile build.
#include "emu_test.h"

#ifdef G4EMU_PROFILE
#include "prof.h"

void prof_check_launch(int which, const float* in, float* out, int stride);
using g4emu::GLD, g4emu::GST, g4emu::SLD, g4emu::SST;

namespace {

bool expect(const char* kernel, int space, unsigned long long req, double ratio) {
    unsigned long long t[4] = {0, 0, 0, 0};
    g4emu::prof_tally(kernel, space, t);
    const double got = t[2] ? (double) t[1] / t[2] : 0;
    const bool ok = t[0] == req && fabs(got - ratio) < 1e-9;
    printf("    %-16s space %d: %llu requests (want %llu), %.2f units / ideal (want %.2f)  %s\n", kernel, space, t[0], req,
           got, ratio, ok ? "ok" : "WRONG");
    return ok;
}
}  // namespace

EMU_CASE("profile", profile_counts_known_patterns) {
    std::vector<float> in(8 * 128 + 8), out(128);
    for (size_t i = 0; i < in.size(); i++) in[i] = (float) i;
    bool ok = true;
    prof_check_launch(0, in.data(), out.data(), 0);
    ok &= expect("copy_coalesced", GLD, 4, 1.0);   // 4 warps, 128 contiguous bytes each: 4 sectors
    ok &= expect("copy_coalesced", GST, 4, 1.0);
    prof_check_launch(1, in.data(), out.data(), 0);
    ok &= expect("read_strided", GLD, 4, 8.0);     // 32 sectors where 4 would do
    prof_check_launch(2, in.data(), out.data(), 0);
    ok &= expect("read_twice", GLD, 8, 1.0);
    unsigned long long f[3] = {0, 0, 0};
    g4emu::prof_footprint("read_twice", f);
    printf("    read_twice footprint: %llu sectors read, %llu sectors of read traffic (want 16, 32)\n", f[0], f[2]);
    ok &= f[0] == 16 && f[2] == 32;
    for (int stride : {32, 2, 33}) {
        prof_check_launch(3, in.data(), out.data(), stride);
        const double want = stride == 32 ? 32 : stride == 2 ? 2 : 1;  // lanes per bank
        ok &= expect("shared_patterns", SST, 2, want);
        ok &= expect("shared_patterns", SLD, 2, 1.0);  // the broadcast
        g4emu::prof_reset();
    }
    return ok;
}
#endif
