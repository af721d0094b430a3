// tools/kernel-emu --profile: the interface of prof.cpp, for the emulator runtime (emu.cpp, which reports cp.async,
// ldmatrix, launches and the warps' meetings), the driver (main.cpp: a table per case) and its self-check
// (test_profile.cpp). Built only with G4EMU_PROFILE.
#pragma once
#include <cstddef>

namespace g4emu {

// The kind of an access (prof_access) and the spaces the statistics are kept in (prof_tally).
enum { P_LD = 0, P_ST = 1, P_ATOM = 2 };
enum Space { GLD, GST, GATOM, SLD, SST, SATOM, NSPACE };

void prof_flush_warp(int w);
void prof_flush_all();
void prof_launch_begin(const void* fn);
void prof_launch_end();
void prof_access(const void* pc, int kind, const void* addr, int bytes, int sub);
// Prints the current case's table per kernel and its worst source lines, then forgets them.
void prof_report(const char* title);
// One kernel of the current case: a space's requests, units, ideal units and bytes.
bool prof_tally(const char* kernel, int space, unsigned long long out[4]);
// Its footprint: distinct sectors read and written (summed over launches), and the read requests' sectors.
bool prof_footprint(const char* kernel, unsigned long long out[3]);
// Forgets the current case's figures.
void prof_reset();

}  // namespace g4emu
