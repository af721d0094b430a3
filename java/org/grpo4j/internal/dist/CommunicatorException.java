package org.grpo4j.internal.dist;

/**
 * A collective failed or was aborted: a peer died, a rank threw, a collective did not finish within the timeout, or
 * the ranks called different collectives. The message names the collective and the step (see
 * {@link Communicator#setContext}).
 */
public class CommunicatorException extends RuntimeException {
    public CommunicatorException(String message) { super(message); }

    public CommunicatorException(String message, Throwable cause) { super(message, cause); }
}
