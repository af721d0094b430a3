#!/usr/bin/env perl
# Summarizes `ptxas -v` output (stdin) as one line per kernel and architecture:
#   sm_90 file.cu:name regs=N smem=BYTES stack=BYTES spill=BYTES
# Each object's log is preceded by a line "FILE name.cu".
# ptxas prints, per kernel: "Compiling entry function 'NAME' for 'sm_XX'", then "N bytes stack frame, S bytes spill
# stores, L bytes spill loads", then "Used R registers, ... B bytes smem, ...".
use strict;
use warnings;
my ($file, $name, $arch, $stack, $spill) = ('?', '?', '?', 0, 0);
while (<STDIN>) {
    if (/^FILE (\S+)/) { $file = $1; next; }
    if (/Compiling entry function '(\S+)' for '(sm_\w+)'/) { ($name, $arch) = ($1, $2); }
    if (/(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads/) { ($stack, $spill) = ($1, $2 + $3); }
    if (/Used (\d+) registers/) {
        my $regs = $1;
        my $smem = /(\d+) bytes smem/ ? $1 : 0;
        print "$arch $file:$name regs=$regs smem=$smem stack=$stack spill=$spill\n";
    }
}
