package org.grpo4j.internal.backend;

import org.junit.platform.engine.support.descriptor.ClassSource;
import org.junit.platform.launcher.TestExecutionListener;
import org.junit.platform.launcher.TestIdentifier;
import org.junit.platform.launcher.TestPlan;

/**
 * Starts {@link KernelEmulatorTest}'s builds and runs when a test plan that holds it starts (registered through
 * META-INF/services), so that they use the CPU the test classes before it leave idle (KernelEmulatorTest.start), and
 * stops whatever of them is left when the plan ends. A plan without that class starts nothing.
 */
public final class KernelEmulatorEarlyStart implements TestExecutionListener {
    private boolean started;

    @Override
    public void testPlanExecutionStarted(TestPlan plan) {
        for (TestIdentifier root : plan.getRoots())
            for (TestIdentifier t : plan.getDescendants(root))
                if (t.getSource().orElse(null) instanceof ClassSource c && c.getClassName().equals(KernelEmulatorTest.class.getName())) {
                    started = true;
                    KernelEmulatorTest.start();
                    return;
                }
    }

    @Override
    public void testPlanExecutionFinished(TestPlan plan) {
        if (!started) return;
        try {
            KernelEmulatorTest.stop();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
