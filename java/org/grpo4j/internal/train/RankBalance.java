package org.grpo4j.internal.train;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * rank_balancing tokens: before a mini-batch's training passes (and before each no-grad log-prob pass, whose
 * log-probs go back the same way), pieces of prompt groups (a prompt's rollouts in the rank's mini-batch, up to a
 * quarter of a group a piece) move from the ranks with the most tokens to those with the fewest, so that every rank's
 * passes carry about the same tokens; the passes' outputs go back to the rollouts' own ranks, which compute the metrics of
 * their reference micro-batches as before. Each token keeps the loss weight its own rank's micro-batch gives it, and
 * the mini-batch's gradient is a sum over all ranks' tokens (ZeRO-2's reduction), so a moved rollout changes only the
 * gradient's summation order. Data parallelism gives each rank a fixed slice of the prompts, and a prompt's responses
 * run from a few tokens to response_length, so the rank with the most tokens sets every training round's pace (the
 * others reduce zeros while it runs its extra passes); verl's balance_batch evens this out the same way, by sequence
 * lengths. Pieces of a group that stay or move together sit next to each other, so train_prefix_sharing still runs
 * their prompt once a pass.
 */
final class RankBalance {
    private RankBalance() {}

    /**
     * Whether a run balances: rank_balancing tokens at world > 1 with pass_packing tokens. With batch_size passes every
     * rank runs the same count of fixed-size passes in lockstep, so even tokens would not shorten a round, and a rank
     * given more rollouts would add rounds that every rank takes part in.
     */
    static boolean on(org.grpo4j.train.GrpoConfig cfg, int world) {
        return world > 1 && cfg.rankBalancing.equals("tokens") && PassPacking.byTokens(cfg);
    }

    /**
     * Which rank runs each unit: {@code loads[r][u]} is the tokens of rank r's unit u; the result has the same shape.
     * Starting from every unit at home, it repeatedly moves from the rank with the most tokens to the one with the
     * fewest the unit (run there now) whose tokens come closest to half their gap without exceeding it, until none
     * fits. Each move lowers the sum of squared loads, so it ends; every rank computes the same plan from the same
     * loads (ties go to the lowest rank, then the lowest unit).
     */
    static int[][] plan(long[][] loads) {
        int world = loads.length;
        int[][] runBy = new int[world][];
        long[] load = new long[world];
        int units = 0;
        for (int r = 0; r < world; r++) {
            runBy[r] = new int[loads[r].length];
            Arrays.fill(runBy[r], r);
            for (long l : loads[r]) load[r] += l;
            units += loads[r].length;
        }
        for (int moves = 0; moves < 4 * units + 4; moves++) {
            int hi = 0, lo = 0;
            for (int r = 1; r < world; r++) {
                if (load[r] > load[hi]) hi = r;
                if (load[r] < load[lo]) lo = r;
            }
            long gap = load[hi] - load[lo];
            int bestR = -1, bestU = -1;
            long bestScore = -1;
            for (int r = 0; r < world; r++)
                for (int u = 0; u < loads[r].length; u++) {
                    long l = loads[r][u];
                    if (runBy[r][u] != hi || l <= 0 || l >= gap) continue;
                    long score = Math.min(l, gap - l); // how much the larger of the two loads falls
                    if (score > bestScore) {
                        bestScore = score;
                        bestR = r;
                        bestU = u;
                    }
                }
            if (bestR < 0) break;
            runBy[bestR][bestU] = lo;
            load[hi] -= loads[bestR][bestU];
            load[lo] += loads[bestR][bestU];
        }
        return runBy;
    }

    /**
     * A rank's mini-batch grouped by prompt into its units: each prompt's rollouts in run order, in pieces of at most
     * {@code samples} / 4 (rounded up) rollouts, so that a rank's load can move in quarters of a group (a piece still
     * runs its prompt once a pass, and pieces that stay or move to one rank sit next to each other).
     */
    static List<List<Rollout>> units(List<Rollout> runOrder, int samples) {
        int piece = Math.max(1, (samples + 3) / 4);
        List<List<Rollout>> out = new ArrayList<>();
        for (List<Rollout> g : UpdatePhase.promptGroups(runOrder))
            for (int i = 0; i < g.size(); i += piece) out.add(new ArrayList<>(g.subList(i, Math.min(g.size(), i + piece))));
        return out;
    }

    /** The tokens a unit puts through a training pass (what pass_packing fills passes by). */
    static long tokens(List<Rollout> unit) {
        long t = 0;
        for (Rollout o : unit) t += o.seq.length;
        return t;
    }

    /**
     * What a rank runs after a move: its own units that stay (in order), then the units other ranks send it (rank
     * order, unit order) as copies ({@code guests}: each one's owner rank and (unit, index) there).
     */
    record Exchange(List<Rollout> run, List<Rollout> guests, int[] guestOwner, int[][] guestIndex, int moved) {}

    /** Writes one rollout of a unit that leaves this rank; reads one back on the rank that runs it. */
    interface Codec {
        void write(Rollout o, Doubles out);

        /** A copy of a rollout from {@code p[from..]}, as {@link #write} put it. */
        Rollout read(double[] p, int from);
    }

    /**
     * Plans a move of this rank's units and every other rank's (collectives: every rank calls it with its own units)
     * and exchanges the moving ones through {@code codec}, or returns null on every rank when the plan moves nothing.
     */
    static Exchange exchange(RankState r, List<List<Rollout>> mine, Codec codec) {
        int world = r.world;
        double[] myLoads = new double[mine.size()];
        for (int u = 0; u < mine.size(); u++) myLoads[u] = tokens(mine.get(u));
        long[][] loads = gatherRagged(r, myLoads, x -> (long) x);
        int[][] runBy = plan(loads);
        boolean any = false;
        for (int q = 0; q < world; q++) for (int u = 0; u < runBy[q].length; u++) any |= runBy[q][u] != q;
        if (!any) return null;
        // what this rank sends: per unit leaving it, [unit, rank to run it, rollouts, then per rollout its record's
        // length and the record]
        Doubles out = new Doubles();
        int moved = 0;
        List<Rollout> run = new ArrayList<>();
        for (int u = 0; u < mine.size(); u++) {
            if (runBy[r.rank][u] == r.rank) {
                run.addAll(mine.get(u));
                continue;
            }
            out.add(u);
            out.add(runBy[r.rank][u]);
            out.add(mine.get(u).size());
            for (Rollout o : mine.get(u)) {
                int at = out.size();
                out.add(0);
                codec.write(o, out);
                out.set(at, out.size() - at - 1);
                moved++;
            }
        }
        double[][] all = gatherRagged(r, out.toArray());
        List<Rollout> guests = new ArrayList<>();
        List<Integer> owners = new ArrayList<>();
        List<int[]> index = new ArrayList<>();
        for (int src = 0; src < world; src++) {
            if (src == r.rank) continue;
            double[] p = all[src];
            int k = 0;
            while (k < p.length) {
                int unit = (int) p[k++], to = (int) p[k++], count = (int) p[k++];
                for (int i = 0; i < count; i++) {
                    int len = (int) p[k++];
                    if (to == r.rank) {
                        guests.add(codec.read(p, k));
                        owners.add(src);
                        index.add(new int[] {unit, i});
                    }
                    k += len;
                }
            }
        }
        run.addAll(guests);
        int[] guestOwner = owners.stream().mapToInt(Integer::intValue).toArray();
        return new Exchange(run, guests, guestOwner, index.toArray(new int[0][]), moved);
    }

    /**
     * A training pass's move: a rollout travels with its tokens, loss weight, advantage and reference and old log-probs
     * (on-policy: none, the training forward's own are used); {@code weight} gains the guests' weights.
     */
    static Exchange forTraining(RankState r, List<List<Rollout>> mine, Map<Rollout, Double> weight, boolean onPolicy) {
        return exchange(r, mine, new Codec() {
            @Override
            public void write(Rollout o, Doubles out) {
                out.add(o.seq.length);
                out.add(o.promptLen);
                out.add(weight.get(o));
                out.add(o.advantage);
                for (int t : o.seq) out.add(t);
                for (float f : o.ref) out.add(f);
                if (!onPolicy) for (float f : o.old) out.add(f);
            }

            @Override
            public Rollout read(double[] p, int k) {
                Rollout g = tokensOf(p, k);
                weight.put(g, p[k + 2]);
                g.advantage = p[k + 3];
                int nt = g.targets.length, q = k + 4 + g.seq.length;
                g.ref = new float[nt];
                for (int t = 0; t < nt; t++) g.ref[t] = (float) p[q++];
                if (!onPolicy) {
                    g.old = new float[nt];
                    for (int t = 0; t < nt; t++) g.old[t] = (float) p[q++];
                }
                return g;
            }
        });
    }

    /** A no-grad log-prob pass's move: a rollout travels with its tokens only. */
    static Exchange forLogprobs(RankState r, List<List<Rollout>> mine) {
        return exchange(r, mine, new Codec() {
            @Override
            public void write(Rollout o, Doubles out) {
                out.add(o.seq.length);
                out.add(o.promptLen);
                out.add(0);
                out.add(0);
                for (int t : o.seq) out.add(t);
            }

            @Override
            public Rollout read(double[] p, int k) { return tokensOf(p, k); }
        });
    }

    /** A guest's tokens from a record [seq length, prompt length, weight, advantage, seq...] at p[k]. */
    private static Rollout tokensOf(double[] p, int k) {
        int len = (int) p[k], promptLen = (int) p[k + 1];
        Rollout g = new Rollout(); // what a pass reads of it (microStep, LogprobPhase.logprobs)
        g.seq = new int[len];
        for (int t = 0; t < len; t++) g.seq[t] = (int) p[k + 4 + t];
        g.promptLen = promptLen;
        g.targets = Arrays.copyOfRange(g.seq, promptLen, len);
        return g;
    }

    /**
     * After the passes: each guest's per-token arrays ({@code results}, as many for every guest) go back to its rank,
     * which hands them to {@code apply} with its own rollout. A collective.
     */
    static void giveBack(RankState r, Exchange ex, List<List<Rollout>> mine, Map<Rollout, float[][]> results,
                         java.util.function.BiConsumer<Rollout, float[][]> apply) {
        Doubles out = new Doubles();
        for (int g = 0; g < ex.guests().size(); g++) {
            float[][] arrays = results.remove(ex.guests().get(g));
            out.add(ex.guestOwner()[g]);
            out.add(ex.guestIndex()[g][0]);
            out.add(ex.guestIndex()[g][1]);
            out.add(arrays.length);
            out.add(arrays.length == 0 ? 0 : arrays[0].length);
            for (float[] a : arrays) for (float f : a) out.add(f);
        }
        double[][] all = gatherRagged(r, out.toArray());
        for (int src = 0; src < r.world; src++) {
            double[] p = all[src];
            int k = 0;
            while (k < p.length) {
                int owner = (int) p[k++], unit = (int) p[k++], i = (int) p[k++], m = (int) p[k++], n = (int) p[k++];
                if (owner != r.rank) {
                    k += m * n;
                    continue;
                }
                float[][] a = new float[m][n];
                for (float[] x : a) for (int t = 0; t < n; t++) x[t] = (float) p[k++];
                apply.accept(mine.get(unit).get(i), a);
            }
        }
    }

    /** A growable double array (a payload without boxing). */
    static final class Doubles {
        private double[] a = new double[1024];
        private int n;

        void add(double v) {
            if (n == a.length) a = Arrays.copyOf(a, 2 * n);
            a[n++] = v;
        }

        void set(int i, double v) { a[i] = v; }

        int size() { return n; }

        double[] toArray() { return Arrays.copyOf(a, n); }
    }

    /** Every rank's array (of any length) on every rank: the lengths first, then the arrays padded to the longest. */
    static double[][] gatherRagged(RankState r, double[] mine) {
        long longest = UpdatePhase.globalMax(r, mine.length);
        double[] padded = new double[(int) longest + 1];
        padded[0] = mine.length;
        System.arraycopy(mine, 0, padded, 1, mine.length);
        double[][] all = r.comm.allGatherDoubles(padded);
        double[][] out = new double[all.length][];
        for (int i = 0; i < all.length; i++) out[i] = Arrays.copyOfRange(all[i], 1, 1 + (int) all[i][0]);
        return out;
    }

    private static long[][] gatherRagged(RankState r, double[] mine, java.util.function.DoubleToLongFunction f) {
        double[][] all = gatherRagged(r, mine);
        long[][] out = new long[all.length][];
        for (int i = 0; i < all.length; i++) out[i] = Arrays.stream(all[i]).mapToLong(f).toArray();
        return out;
    }
}
