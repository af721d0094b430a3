#!/usr/bin/perl
# tools/kernel-emu: rewrites a cuda/ source where C++ cannot read CUDA (see emu.h): kernel launches and extern
# __shared__ arrays. Everything else passes through unchanged, so the emulator runs the kernels as written.
use strict;
use warnings;
while (my $line = <>) {
    # extern __shared__ [__align__(N)] TYPE NAME[];  ->  TYPE* NAME = (TYPE*) g4emu::g_arena;
    $line =~ s/extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w ]+?)\s+(\w+)\[\];/$1* $2 = reinterpret_cast<$1*>(g4emu::g_arena);/g;
    # KERNEL<<<CONFIG>>>(ARGS)  ->  g4emu::launch("KERNEL", KERNEL, CONFIG)(ARGS)
    $line =~ s/([A-Za-z_][\w:]*(?:<[^<>;]*>)?)<<<(.*?)>>>/g4emu::launch("$1", $1, $2)/g;
    die "unconverted launch in $ARGV line $.: $line" if $line =~ /<<<|>>>/;
    print $line;
}
