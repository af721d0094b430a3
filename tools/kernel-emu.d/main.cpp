// tools/kernel-emu's driver: runs the registered cases (all but the families "shapes..." of real sizes, or those whose
// family or name is given), prints each
// case's figures and PASS/FAIL, exits 1 if any failed.
#include <chrono>

#include "emu_test.h"

#ifdef G4EMU_PROFILE
#include "prof.h"
#endif

std::vector<emu_test::Case>& emu_test::registry() {
    static std::vector<Case> r;
    return r;
}

int main(int argc, char** argv) {
    int failed = 0, run = 0;
    for (const auto& c : emu_test::registry()) {
        bool wanted = argc < 2 && strncmp(c.family, "shapes", 6) != 0;  // (the real-size cases run only when named)
        for (int i = 1; i < argc; i++) wanted = wanted || c.family == std::string(argv[i]) || c.name == std::string(argv[i]);
        if (!wanted) continue;
        printf("%s/%s\n", c.family, c.name);
        fflush(stdout);
        auto t0 = std::chrono::steady_clock::now();
        long long b0 = g4emu::stat_blocks(), t0n = g4emu::stat_threads();
        bool ok = c.run();
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        printf("  %s  (%.2f s, %lld blocks, %lld threads emulated)\n", ok ? "PASS" : "FAIL", s, g4emu::stat_blocks() - b0,
               g4emu::stat_threads() - t0n);
#ifdef G4EMU_PROFILE
        g4emu::prof_report(c.name);
#endif
        fflush(stdout);
        run++;
        if (!ok) failed++;
    }
    printf("kernel-emu: %d cases, %d failed\n", run, failed);
    return failed || run == 0 ? 1 : 0;
}
