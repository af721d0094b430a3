package org.grpo4j.internal.dist;

import java.security.MessageDigest;
import java.util.HexFormat;

/**
 * Process 1 of a two-process rendezvous on loopback, for {@link RendezvousTest}: reads the unique id rank 0's process
 * published, prints its SHA-256, passes barrier "b1", then waits at barrier "b2" (where the test kills it). Exits 3
 * with the reason when the run is aborted.
 */
public final class RendezvousChild {
    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        String secret = args.length > 1 ? args[1] : "";
        DistEnv env = new DistEnv(2, 2, 1, new int[] {1}, new int[] {0}, "127.0.0.1", port);
        try (Rendezvous r = new Rendezvous(env, secret, 20_000, 100)) {
            r.onAbort(reason -> {
                System.out.println("aborted: " + reason);
                System.out.flush();
                Runtime.getRuntime().halt(3);
            });
            byte[] id = r.shareBytes("nccl/unique_id", null);
            System.out.println("id " + HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(id)));
            System.out.flush();
            r.barrier("b1");
            System.out.println("passed b1");
            System.out.flush();
            r.barrier("b2");
            System.out.println("passed b2");
        }
    }
}
